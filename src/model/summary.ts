/**
 * What `bwq inspect` reports about a model directory, a safetensors file or an index JSON:
 * architecture, parameter count, dtype histogram, tensors, metadata and (for bwq outputs) the
 * quantization summary. Gathering only; formatting lives in src/cli/commands/inspect.ts. A model
 * directory's tensors are checked against its config.json first (names and shapes, as quantize and
 * eval check them): a mismatch is an error naming every mismatching tensor.
 */
import { stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { BwqError } from '../errors.js';
import type { QuantizationConfig } from '../quant/recipe.js';
import { Checkpoint } from '../safetensors/checkpoint.js';
import type { SafetensorsDtype } from '../safetensors/dtypes.js';
import { SafetensorsFile, type TensorInfo } from '../safetensors/reader.js';
import { loadModelConfig, type ModelConfig } from './config.js';
import { checkWeightShapes, expectedShapes, resolveWeightNames } from './weights.js';
import { hasSimulatedWeights, openPackedOnly } from './packed-only.js';

export interface TensorRow {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  parameters: number;
  bytes: number;
  file: string;
}

export interface TensorGroup {
  /** name with layer indices replaced by `*` */
  pattern: string;
  count: number;
  dtype: SafetensorsDtype | 'mixed';
  /** undefined when the members' shapes differ */
  shape: number[] | undefined;
  parameters: number;
  bytes: number;
}

export interface DtypeStats {
  tensors: number;
  parameters: number;
  bytes: number;
}

export interface PackedSummary {
  file: string;
  fileBytes: number;
  format: string | undefined;
  /** number of `<prefix>.qweight` tensors */
  packedLinears: number;
  /** bytes of everything describing the packed linears (qweight, wscale, lr_a, lr_b, bias) */
  packedLinearBytes: number;
  /** Σ out·in over the packed linears */
  linearParameters: number;
  /** the same linears stored as float32 / as a 16-bit dtype */
  linearFloat32Bytes: number;
  linearFloat16Bytes: number;
  /** true when `in` was taken from the qweight width (32 × words) because nothing else gave it */
  inFeaturesApproximate: boolean;
  /** low-rank (PSP) terms present */
  lowRankLinears: number;
  /** honest bits per weight: the packed file's bytes against the original model's parameters */
  bits: BitsPerWeight;
}

/** What each kind of tensor in the packed file costs, as bits per parameter of the original model. */
export interface BitsPerWeight {
  /** parameters of the model before quantization: Σ out·in of the packed linears + every other tensor */
  originalParameters: number;
  /** the whole file (header included) × 8 / originalParameters */
  perWeight: number;
  /** the packed linears alone (signs, scales, low-rank factors, rotations, biases) × 8 / Σ out·in */
  linearsPerWeight: number;
  classes: { name: BitsClass; bytes: number; bitsPerWeight: number }[];
}

export type BitsClass = 'signs' | 'scales' | 'low-rank' | 'rotations' | 'embeddings' | 'lm_head' | 'norms' | 'biases' | 'other';

function bitsClass(name: string): BitsClass {
  if (name.endsWith('.qweight')) return 'signs';
  if (name.endsWith('.wscale')) return 'scales';
  if (name.endsWith('.lr_a') || name.endsWith('.lr_b')) return 'low-rank';
  if (/\.okt_r[123]$/.test(name)) return 'rotations';
  if (name.endsWith('embed_tokens.weight') || name.endsWith('wte.weight')) return 'embeddings';
  if (name.startsWith('lm_head.')) return 'lm_head';
  if (/norm\.weight$|norm\.bias$|_ln\.weight$/.test(name)) return 'norms';
  if (name.endsWith('.bias')) return 'biases';
  return 'other';
}

export interface QuantizationSummary {
  method: QuantizationConfig['method'];
  aBits: QuantizationConfig['a_bits'];
  wBits: number;
  bwqVersion: string;
  settings: Readonly<Record<string, string | number | boolean>>;
  /** undefined: the method has no packed model (billm, arb) */
  packedWeights: string | undefined;
  /** linears with an activation recipe, and those with an online rotation */
  quantizedLinears: number;
  rotatedLinears: number;
}

export interface InspectReport {
  path: string;
  kind: 'model-dir' | 'safetensors' | 'index';
  model: Omit<ModelConfig, 'raw' | 'quantization'> | undefined;
  files: { path: string; bytes: number; tensors: number }[];
  tensorCount: number;
  parameterCount: number;
  /** tensor data bytes (all files) */
  dataBytes: number;
  /** file sizes (all files, headers included) */
  fileBytes: number;
  dtypes: Partial<Record<SafetensorsDtype, DtypeStats>>;
  /** metadata of each file, keyed by file path */
  metadata: Record<string, Record<string, string>>;
  tensors: TensorRow[] | undefined;
  tensorGroups: TensorGroup[] | undefined;
  quantization: QuantizationSummary | undefined;
  packed: PackedSummary | undefined;
}

function elements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function rowOf(info: TensorInfo): TensorRow {
  return {
    name: info.name, dtype: info.dtype, shape: [...info.shape], parameters: elements(info.shape), bytes: info.byteLength,
    file: info.file,
  };
}

/** Groups tensors whose names differ only in layer indices (`.<n>.` → `.*.`). */
export function groupTensors(rows: readonly TensorRow[]): TensorGroup[] {
  const groups = new Map<string, TensorGroup>();
  for (const row of rows) {
    const pattern = row.name.replace(/\.\d+\./g, '.*.');
    const g = groups.get(pattern);
    if (g === undefined) {
      groups.set(pattern, { pattern, count: 1, dtype: row.dtype, shape: [...row.shape], parameters: row.parameters, bytes: row.bytes });
      continue;
    }
    g.count += 1;
    g.parameters += row.parameters;
    g.bytes += row.bytes;
    if (g.dtype !== row.dtype) g.dtype = 'mixed';
    if (g.shape !== undefined && (g.shape.length !== row.shape.length || g.shape.some((d, i) => d !== row.shape[i]))) g.shape = undefined;
  }
  return [...groups.values()];
}

/** Summary of a bwq packed file (format bwq-packed-v1). */
export function summarizePacked(file: SafetensorsFile, fileBytes: number, floatShapes?: (prefix: string) => number[] | undefined): PackedSummary {
  const names = new Set(file.names());
  let packedLinears = 0;
  let packedLinearBytes = 0;
  let linearParameters = 0;
  let approximate = false;
  let lowRank = 0;
  for (const name of names) {
    if (!name.endsWith('.qweight')) continue;
    const prefix = name.slice(0, -'.qweight'.length);
    const q = file.info(name);
    packedLinears += 1;
    for (const suffix of ['.qweight', '.wscale', '.lr_a', '.lr_b', '.bias']) {
      if (names.has(prefix + suffix)) packedLinearBytes += file.info(prefix + suffix).byteLength;
    }
    if (names.has(`${prefix}.lr_a`)) lowRank += 1;
    const rows = q.shape[0] ?? 0;
    let cols: number | undefined;
    if (names.has(`${prefix}.lr_b`)) cols = file.info(`${prefix}.lr_b`).shape[1];
    if (cols === undefined) {
      const float = floatShapes?.(prefix);
      if (float !== undefined && float.length === 2) cols = float[0] === rows ? float[1] : float[0];
    }
    if (cols === undefined) {
      cols = (q.shape[1] ?? 0) * 32;
      approximate = true;
    }
    linearParameters += rows * cols;
  }
  // every tensor by class; the original model's parameters are the packed linears' out·in plus every tensor
  // that is not a part of a packed linear or a rotation (those replace the float weights)
  const bytesOf = new Map<BitsClass, number>();
  let otherParameters = 0;
  for (const name of names) {
    const info = file.info(name);
    const cls = bitsClass(name);
    bytesOf.set(cls, (bytesOf.get(cls) ?? 0) + info.byteLength);
    if (cls !== 'signs' && cls !== 'scales' && cls !== 'low-rank' && cls !== 'rotations') {
      otherParameters += info.shape.reduce((a, b) => a * b, 1);
    }
  }
  const originalParameters = linearParameters + otherParameters;
  const perParam = (bytes: number): number => (originalParameters > 0 ? (8 * bytes) / originalParameters : 0);
  const linearBytes = (['signs', 'scales', 'low-rank', 'rotations'] as const).reduce((a, c) => a + (bytesOf.get(c) ?? 0), 0);
  const order: BitsClass[] = ['signs', 'scales', 'low-rank', 'rotations', 'embeddings', 'lm_head', 'norms', 'biases', 'other'];
  const bits: BitsPerWeight = {
    originalParameters,
    perWeight: perParam(fileBytes),
    linearsPerWeight: linearParameters > 0 ? (8 * linearBytes) / linearParameters : 0,
    classes: order.filter((c) => bytesOf.has(c)).map((c) => ({ name: c, bytes: bytesOf.get(c)!, bitsPerWeight: perParam(bytesOf.get(c)!) })),
  };
  return {
    file: file.path,
    fileBytes,
    format: file.metadata['format'],
    bits,
    packedLinears,
    packedLinearBytes,
    linearParameters,
    linearFloat32Bytes: linearParameters * 4,
    linearFloat16Bytes: linearParameters * 2,
    inFeaturesApproximate: approximate,
    lowRankLinears: lowRank,
  };
}

function summarizeQuantization(q: QuantizationConfig): QuantizationSummary {
  let quantized = 0;
  let rotated = 0;
  for (const layer of q.layers) {
    for (const recipe of Object.values(layer.linears)) {
      if (recipe === undefined) continue;
      if (recipe.quantizer.kind !== 'none') quantized += 1;
      if (recipe.rotation !== undefined) rotated += 1;
    }
  }
  return {
    method: q.method, aBits: q.a_bits, wBits: q.w_bits, bwqVersion: q.bwq_version, settings: q.settings,
    packedWeights: q.packed_weights, quantizedLinears: quantized, rotatedLinears: rotated,
  };
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() ?? false;
}

/**
 * Gathers the report for `path` (model directory, .safetensors file or index JSON).
 * `listTensors` includes every tensor; otherwise directories get grouped tensors instead.
 */
export async function inspectPath(path: string, options: { listTensors?: boolean } = {}): Promise<InspectReport> {
  const s = await stat(path).catch(() => undefined);
  if (s === undefined) throw new BwqError('no such file or directory', { file: path });
  let kind: InspectReport['kind'];
  let config: ModelConfig | undefined;
  let checkpoint: Checkpoint;
  let packedOnlyShapes: Map<string, number[]> | undefined;
  if (s.isDirectory()) {
    kind = 'model-dir';
    if (await isFile(join(path, 'config.json'))) config = await loadModelConfig(path);
    if (config?.quantization?.packed_weights !== undefined && !(await hasSimulatedWeights(path))) {
      // a --no-simulated OUT_DIR: the packed file is the checkpoint, names and shapes checked as it opens
      const opened = await openPackedOnly(path, config, config.quantization.packed_weights);
      checkpoint = opened.checkpoint;
      packedOnlyShapes = expectedShapes(config, opened.weightNames);
    } else {
      checkpoint = await Checkpoint.open(path);
    }
  } else if (path.endsWith('.json')) {
    kind = 'index';
    checkpoint = await Checkpoint.openIndex(path);
  } else {
    kind = 'safetensors';
    checkpoint = await Checkpoint.openFile(path);
  }
  try {
    if (config !== undefined && packedOnlyShapes === undefined) {
      // as quantize and eval do: every tensor the config needs, with the shape it implies (all mismatches named)
      const where = checkpoint.indexFile ?? checkpoint.files[0] ?? path;
      checkWeightShapes(config, resolveWeightNames(config, checkpoint, where), checkpoint, where);
    }
    const rows = checkpoint.names().map((n) => rowOf(checkpoint.info(n)));
    const dtypes: Partial<Record<SafetensorsDtype, DtypeStats>> = {};
    for (const row of rows) {
      const d = (dtypes[row.dtype] ??= { tensors: 0, parameters: 0, bytes: 0 });
      d.tensors += 1;
      d.parameters += row.parameters;
      d.bytes += row.bytes;
    }
    const files = checkpoint.safetensorsFiles().map((f) => ({ path: f.path, bytes: f.fileSize, tensors: f.names().length }));
    const metadata: Record<string, Record<string, string>> = {};
    for (const f of checkpoint.safetensorsFiles()) metadata[f.path] = { ...f.metadata };

    let quantization: QuantizationSummary | undefined;
    let packed: PackedSummary | undefined;
    const floatShape = (prefix: string): number[] | undefined => {
      const name = `${prefix}.weight`;
      return checkpoint.has(name) ? checkpoint.info(name).shape : packedOnlyShapes?.get(name);
    };
    if (config?.quantization !== undefined) {
      quantization = summarizeQuantization(config.quantization);
      const packedPath = config.quantization.packed_weights === undefined ? undefined : join(path, config.quantization.packed_weights);
      if (packedPath !== undefined && await isFile(packedPath)) {
        const pf = await SafetensorsFile.open(packedPath);
        try {
          packed = summarizePacked(pf, pf.fileSize, floatShape);
        } finally {
          await pf.close();
        }
      }
    } else if (kind === 'model-dir' && await isFile(join(path, 'model.packed.safetensors'))
      && !checkpoint.files.some((f) => basename(f) === 'model.packed.safetensors')) {
      const pf = await SafetensorsFile.open(join(path, 'model.packed.safetensors'));
      try {
        packed = summarizePacked(pf, pf.fileSize, floatShape);
      } finally {
        await pf.close();
      }
    } else if (kind === 'safetensors' && rows.some((r) => r.name.endsWith('.qweight'))) {
      const only = checkpoint.safetensorsFiles()[0]!;
      packed = summarizePacked(only, only.fileSize);
    }

    const listAll = options.listTensors === true || kind === 'safetensors';
    let model: InspectReport['model'];
    if (config !== undefined) {
      const { raw: _raw, quantization: _q, ...rest } = config;
      model = rest;
    }
    return {
      path,
      kind,
      model,
      files,
      tensorCount: rows.length,
      parameterCount: rows.reduce((a, r) => a + r.parameters, 0),
      dataBytes: rows.reduce((a, r) => a + r.bytes, 0),
      fileBytes: files.reduce((a, f) => a + f.bytes, 0),
      dtypes,
      metadata,
      tensors: listAll ? rows : undefined,
      tensorGroups: listAll ? undefined : groupTensors(rows),
      quantization,
      packed,
    };
  } finally {
    await checkpoint.close();
  }
}
