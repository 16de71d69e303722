/**
 * How much disk `bwq quantize` needs, estimated before any work so that a full file system is refused
 * up front. An upper bound on the peak, over the run, of OUT_DIR's temporary directory plus the run's
 * checkpoint beside it (docs/FORMATS.md, "Disk use"):
 *   simulated   the simulated model (absent with --no-simulated): every checkpoint tensor in its kept dtype
 *               (bf16 / fp16 / f32 as in the checkpoint, anything else f32), plus the OKT factors (bwla, f32)
 *   packed      model.packed.safetensors: unquantized tensors in their kept dtype; per quantized linear
 *               sign words rows·⌈cols/32⌉·4 + scales rows·4 + low-rank rank·(rows+cols)·4; OKT factors
 *   spill       the per-layer files holding the quantized linears (simulated weight in its kept dtype +
 *               the packed parts); `spillBlock` is the largest one
 *   checkpoint  the hidden states after a block, twice (the next one is written before the last is removed):
 *               2 · nsamples · seqlen · hidden · 4, plus the OKT factors
 *   copies      tokenizer/generation files copied from the model, config.json, the report
 * plus each safetensors header (name + 128 bytes per tensor). The write-out deletes each block's spill file
 * as soon as the block is in the outputs, so
 *   peak = max(spill, simulated + packed + copies + spillBlock) + checkpoint
 * (the first term while the blocks are quantized, the second while the outputs are written).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelDir } from '../model/model-dir.js';
import { linearByRole } from '../model/weights.js';
import { SIMULATED_ONLY_METHODS, type LinearRole, type QuantMethod } from '../quant/recipe.js';
import { kroneckerSplit } from '../quant/kronecker.js';

export interface OutputSizeInput {
  /** every checkpoint tensor, with its element size in the outputs (its kept dtype; default 4) */
  tensors: readonly { name: string; shape: readonly number[]; bytesPerElement?: number }[];
  /** the linears that get quantized (HF weight name, [rows, cols] = [out, in], decoder block, kept element size (default 4)) */
  linears: readonly { name: string; rows: number; cols: number; layer?: number; bytesPerElement?: number }[];
  /** input width of each group with an OKT rotation (bwla: four per layer) */
  rotatedWidths: readonly number[];
  /** PSP rank bound (0 unless bwla) */
  rank: number;
  /** bytes of the files copied or written beside the weights (tokenizer, config, report) */
  copiedBytes: number;
  /** false: no simulated model is written (--no-simulated); default true */
  simulated?: boolean;
  /** false: no packed model is written (billm, arb); default true */
  packed?: boolean;
  /** bytes of the calibration hidden states (nsamples · seqlen · hidden · 4); default 0 */
  hiddenStateBytes?: number;
}

export interface OutputSize {
  simulated: number;
  packed: number;
  /** all spill files (before the write-out) */
  spill: number;
  /** the largest block's spill file */
  spillBlock: number;
  /** hidden states (twice) and OKT factors in the checkpoint */
  checkpoint: number;
  copies: number;
  /** the estimated peak (see the file comment) */
  total: number;
}

/** Slack for the JSON files bwq writes (config.json with quantization_config, quantize-report.json, the shard index). */
const JSON_SLACK = 1 << 20;
const HEADER_BYTES_PER_TENSOR = 128;

const elements = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export function estimateOutputSize(input: OutputSizeInput): OutputSize {
  const withSimulated = input.simulated !== false;
  const quantized = new Set(input.linears.map((l) => l.name));
  const header = (name: string): number => name.length + HEADER_BYTES_PER_TENSOR;
  let rotations = 0;
  for (const n of input.rotatedWidths) {
    const { a, b, r } = kroneckerSplit(n);
    rotations += (r > 0 ? 3 : 2) * header('model.layers.000.attn_out.okt_r1') + 4 * (a * a + b * b + r * r);
  }
  let simulated = 8 + rotations;
  let packed = 8 + rotations;
  for (const t of input.tensors) {
    const bytes = header(t.name) + (t.bytesPerElement ?? 4) * elements(t.shape);
    simulated += bytes;
    if (!quantized.has(t.name)) packed += bytes;
  }
  const byBlock = new Map<number, number>();
  for (const l of input.linears) {
    const parts = 4 * l.rows * Math.ceil(l.cols / 32) + 4 * l.rows + 4 * input.rank * (l.rows + l.cols);
    packed += 4 * header(l.name) + parts;
    const spilled = 4 * header(l.name) + parts + (withSimulated ? header(l.name) + (l.bytesPerElement ?? 4) * l.rows * l.cols : 0);
    byBlock.set(l.layer ?? 0, (byBlock.get(l.layer ?? 0) ?? 0) + spilled);
  }
  const spill = [...byBlock.values()].reduce((a, b) => a + b, 0);
  const spillBlock = Math.max(0, ...byBlock.values());
  if (!withSimulated) simulated = 0;
  if (input.packed === false) packed = 0;
  const checkpoint = 2 * (input.hiddenStateBytes ?? 0) + rotations;
  const copies = input.copiedBytes + JSON_SLACK;
  const total = Math.max(spill, simulated + packed + copies + spillBlock) + checkpoint;
  return { simulated, packed, spill, spillBlock, checkpoint, copies, total };
}

/** Bytes per element of a tensor in the outputs: bf16 / fp16 / f32 kept, anything else as f32. */
export function packedElementBytes(dtype: string): number {
  return dtype === 'BF16' || dtype === 'F16' ? 2 : 4;
}

const ROLES: readonly LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
/** The role whose input width is each rotated group's width (attn_in, attn_out, mlp_in, mlp_out). */
const GROUP_INPUT_ROLES: readonly LinearRole[] = ['q_proj', 'o_proj', 'up_proj', 'down_proj'];

/**
 * The estimate's input for a model about to be quantized with `method` (and PSP `rank` for bwla);
 * `run.simulated` false for --no-simulated, `run.calibrationTokens` = nsamples · seqlen.
 */
export async function outputSizeInput(model: ModelDir, method: QuantMethod, rank: number, copiedFiles: readonly string[],
  run: { simulated?: boolean; calibrationTokens?: number } = {}): Promise<OutputSizeInput> {
  const { checkpoint, weightNames } = model;
  const tensors = checkpoint.names().map((name) => {
    const info = checkpoint.info(name);
    return { name, shape: info.shape, bytesPerElement: packedElementBytes(info.dtype) };
  });
  const linears: OutputSizeInput['linears'][number][] = [];
  const rotatedWidths: number[] = [];
  for (const [index, layer] of weightNames.layers.entries()) {
    const cols = new Map<LinearRole, number>();
    for (const role of ROLES) {
      const l = linearByRole(layer, role);
      if (l === undefined) continue;
      const info = checkpoint.info(l.weight);
      const [rows = 0, width = 0] = info.shape;
      linears.push({ name: l.weight, rows, cols: width, layer: index, bytesPerElement: packedElementBytes(info.dtype) });
      cols.set(role, width);
    }
    if (method === 'bwla') for (const role of GROUP_INPUT_ROLES) if (cols.has(role)) rotatedWidths.push(cols.get(role)!);
  }
  let copiedBytes = 0;
  for (const f of ['config.json', ...copiedFiles]) copiedBytes += (await stat(join(model.dir, f)).catch(() => undefined))?.size ?? 0;
  return {
    tensors, linears, rotatedWidths, rank: method === 'bwla' ? rank : 0, copiedBytes,
    simulated: run.simulated !== false, packed: !SIMULATED_ONLY_METHODS.includes(method), hiddenStateBytes: 4 * (run.calibrationTokens ?? 0) * model.config.hiddenSize,
  };
}

/** "simulated model 8.0 MiB, packed 2.4 MiB, copies 1.3 MiB, one block's layer file 1.6 MiB, checkpoint 256 KiB; all layer files 6.4 MiB" for messages. */
export function describeOutputSize(size: OutputSize, format: (n: number) => string): string {
  return `${size.simulated > 0 ? `simulated model ${format(size.simulated)}, ` : ''}packed ${format(size.packed)}, copies ${format(size.copies)}, `
    + `one block's layer file ${format(size.spillBlock)}, checkpoint ${format(size.checkpoint)}; all layer files ${format(size.spill)}`;
}
