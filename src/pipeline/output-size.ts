/**
 * How much disk `bwq quantize` needs for OUT_DIR, estimated before any work so that a full file
 * system is refused up front. An upper bound on the peak inside the temporary directory:
 *   simulated  model.safetensors: every checkpoint tensor as float32, plus the OKT factors (bwla)
 *   packed     model.packed.safetensors: non-quantized tensors in their checkpoint dtype; per quantized linear
 *              sign words rows·⌈cols/32⌉·4 + scales rows·4 + low-rank rank·(rows+cols)·4; OKT factors
 *   spill      the per-layer files holding quantized linears until the outputs are written
 *              (simulated weight + the packed parts; removed before OUT_DIR is renamed into place)
 *   copies     tokenizer/generation files copied from the model, config.json, the report
 * plus each safetensors header (name + 128 bytes per tensor).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelDir } from '../model/model-dir.js';
import { linearByRole } from '../model/weights.js';
import type { LinearRole } from '../quant/recipe.js';
import { kroneckerFactors } from '../quant/kronecker.js';

export interface OutputSizeInput {
  /** every checkpoint tensor, with its element size in the checkpoint (the packed file keeps that dtype) */
  tensors: readonly { name: string; shape: readonly number[]; bytesPerElement?: number }[];
  /** the linears that get quantized (HF weight name, [rows, cols] = [out, in]) */
  linears: readonly { name: string; rows: number; cols: number }[];
  /** input width of each group with an OKT rotation (bwla: four per layer) */
  rotatedWidths: readonly number[];
  /** PSP rank bound (0 unless bwla) */
  rank: number;
  /** bytes of the files copied or written beside the weights (tokenizer, config, report) */
  copiedBytes: number;
}

export interface OutputSize {
  simulated: number;
  packed: number;
  spill: number;
  copies: number;
  total: number;
}

/** Slack for the JSON files bwq writes (config.json with quantization_config, quantize-report.json). */
const JSON_SLACK = 1 << 20;
const HEADER_BYTES_PER_TENSOR = 128;

const elements = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

export function estimateOutputSize(input: OutputSizeInput): OutputSize {
  const quantized = new Set(input.linears.map((l) => l.name));
  const header = (name: string): number => name.length + HEADER_BYTES_PER_TENSOR;
  let rotations = 0;
  for (const n of input.rotatedWidths) {
    const { a, b } = kroneckerFactors(n);
    rotations += 2 * header('model.layers.000.attn_out.okt_r1') + 4 * (a * a + b * b);
  }
  let simulated = 8 + rotations;
  let packed = 8 + rotations;
  for (const t of input.tensors) {
    simulated += header(t.name) + 4 * elements(t.shape);
    if (!quantized.has(t.name)) packed += header(t.name) + (t.bytesPerElement ?? 4) * elements(t.shape);
  }
  let spill = 0;
  for (const l of input.linears) {
    const parts = 4 * l.rows * Math.ceil(l.cols / 32) + 4 * l.rows + 4 * input.rank * (l.rows + l.cols);
    packed += 4 * header(l.name) + parts;
    spill += 5 * header(l.name) + 4 * l.rows * l.cols + parts;
  }
  const copies = input.copiedBytes + JSON_SLACK;
  return { simulated, packed, spill, copies, total: simulated + packed + spill + copies };
}

/** Bytes per element of an unquantized tensor in the packed file: bf16 / fp16 / f32 kept, anything else as f32. */
export function packedElementBytes(dtype: string): number {
  return dtype === 'BF16' || dtype === 'F16' ? 2 : 4;
}

const ROLES: readonly LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
/** The role whose input width is each rotated group's width (attn_in, attn_out, mlp_in, mlp_out). */
const GROUP_INPUT_ROLES: readonly LinearRole[] = ['q_proj', 'o_proj', 'up_proj', 'down_proj'];

/** The estimate's input for a model about to be quantized with `method` (and PSP `rank` for bwla). */
export async function outputSizeInput(model: ModelDir, method: 'bwta' | 'bwla' | 'rtn', rank: number, copiedFiles: readonly string[]): Promise<OutputSizeInput> {
  const { checkpoint, weightNames } = model;
  const tensors = checkpoint.names().map((name) => {
    const info = checkpoint.info(name);
    return { name, shape: info.shape, bytesPerElement: packedElementBytes(info.dtype) };
  });
  const linears: OutputSizeInput['linears'][number][] = [];
  const rotatedWidths: number[] = [];
  for (const layer of weightNames.layers) {
    const cols = new Map<LinearRole, number>();
    for (const role of ROLES) {
      const l = linearByRole(layer, role);
      if (l === undefined) continue;
      const [rows = 0, width = 0] = checkpoint.info(l.weight).shape;
      linears.push({ name: l.weight, rows, cols: width });
      cols.set(role, width);
    }
    if (method === 'bwla') for (const role of GROUP_INPUT_ROLES) if (cols.has(role)) rotatedWidths.push(cols.get(role)!);
  }
  let copiedBytes = 0;
  for (const f of ['config.json', ...copiedFiles]) copiedBytes += (await stat(join(model.dir, f)).catch(() => undefined))?.size ?? 0;
  return { tensors, linears, rotatedWidths, rank: method === 'bwla' ? rank : 0, copiedBytes };
}

/** "simulated 16.0 MiB, packed 1.2 MiB, temporary 17.0 MiB, copies 1.3 MiB" for messages. */
export function describeOutputSize(size: OutputSize, format: (n: number) => string): string {
  return `simulated model ${format(size.simulated)}, packed ${format(size.packed)}, temporary layer files ${format(size.spill)}, copies ${format(size.copies)}`;
}
