/**
 * Reading weights in the one layout the rest of bwq uses: linear weights as [out, in] row-major
 * float32 (nn.Linear), whatever the checkpoint stores (GPT-2 Conv1D [in, out], fused c_attn).
 */
import { BwqError } from '../errors.js';
import type { TensorInfo } from '../safetensors/reader.js';
import type { LinearWeightNames, NormWeightNames } from './weights.js';

/** What is needed from a Checkpoint / SafetensorsFile. */
export interface TensorSource {
  info(name: string): TensorInfo;
  readFloat32(name: string): Promise<Float32Array>;
}

export interface LinearWeight {
  /** [rows = out_features, cols = in_features] row-major */
  weight: Float32Array;
  rows: number;
  cols: number;
  bias: Float32Array | undefined;
}

/** Transposes a row-major [rows, cols] matrix, taking only columns [colStart, colStart + width). */
export function transposeColumns(src: Float32Array, rows: number, cols: number, colStart: number, width: number): Float32Array {
  const out = new Float32Array(width * rows);
  for (let r = 0; r < rows; r++) {
    const base = r * cols + colStart;
    for (let c = 0; c < width; c++) out[c * rows + r] = src[base + c]!;
  }
  return out;
}

/** A linear layer's weight as [out, in] (un-transposed, fused q/k/v split) plus its bias. */
export async function readLinearWeight(source: TensorSource, names: LinearWeightNames): Promise<LinearWeight> {
  const info = source.info(names.weight);
  if (info.shape.length !== 2) {
    throw new BwqError(`tensor '${names.weight}' has shape [${info.shape.join(', ')}], expected a matrix`, { file: info.file });
  }
  const [d0, d1] = info.shape as [number, number];
  const raw = await source.readFloat32(names.weight);
  let weight: Float32Array;
  let rows: number;
  let cols: number;
  let biasStart = 0;
  if (!names.transposed) {
    weight = raw;
    rows = d0;
    cols = d1;
  } else {
    const parts = names.fusedIndex === undefined ? 1 : 3;
    if (d1 % parts !== 0) {
      throw new BwqError(`fused tensor '${names.weight}' has ${d1} output columns, not divisible by 3`, { file: info.file });
    }
    rows = d1 / parts;
    cols = d0;
    biasStart = (names.fusedIndex ?? 0) * rows;
    weight = transposeColumns(raw, d0, d1, biasStart, rows);
  }
  let bias: Float32Array | undefined;
  if (names.bias !== undefined) {
    const full = await source.readFloat32(names.bias);
    if (full.length < biasStart + rows) {
      throw new BwqError(`bias '${names.bias}' has ${full.length} values, expected ${biasStart + rows}`, { file: source.info(names.bias).file });
    }
    bias = full.slice(biasStart, biasStart + rows);
  }
  return { weight, rows, cols, bias };
}

/** A norm's weight (and bias for LayerNorm). */
export async function readNormWeight(source: TensorSource, names: NormWeightNames): Promise<{ weight: Float32Array; bias: Float32Array | undefined }> {
  return {
    weight: await source.readFloat32(names.weight),
    bias: names.bias === undefined ? undefined : await source.readFloat32(names.bias),
  };
}
