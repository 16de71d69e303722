/**
 * Keeps memory bounded by one block during `bwq quantize`: when a layer is finished, its quantized
 * linears (simulated weight, packed signs, scales, low-rank factors) are written to a per-layer
 * safetensors file in the run's checkpoint (src/pipeline/checkpoint.ts) and dropped from memory; the
 * final writers (src/pipeline/write-weights.ts) read them back one tensor at a time (positioned reads)
 * and remove each layer's file as soon as that block is in the outputs. The simulated weight is kept
 * in the dtype the simulated model is written in (`simulatedDtype`; bf16 rounding happens here), or not
 * at all when no simulated model is written (`--no-simulated`).
 */
import { rm } from 'node:fs/promises';
import { float32ToBytes } from '../safetensors/dtypes.js';
import { join } from 'node:path';
import { SafetensorsFile } from '../safetensors/reader.js';
import { writeSafetensors, type TensorToWrite } from '../safetensors/writer.js';

/** A quantized linear as the pipeline produces it. */
export interface QuantizedLinearArrays {
  rows: number;
  cols: number;
  rank: number;
  simulated: Float32Array;
  /** bwq-packed-v1 sign words [rows, ceil(cols/32)] */
  qweight: Uint32Array;
  scales: Float32Array;
  lrA: Float32Array;
  lrB: Float32Array;
}

export type LinearPart = 'simulated' | 'qweight' | 'wscale' | 'lr_a' | 'lr_b';

/** A spilled linear: its block, sizes, and a reader of each part's raw little-endian bytes. */
export interface SpilledLinear {
  layer: number;
  rows: number;
  cols: number;
  rank: number;
  read(part: LinearPart): Promise<Uint8Array>;
}

/** Float dtypes the simulated weights are kept in. */
export type SimulatedDtype = 'F32' | 'BF16' | 'F16';

export interface SpillOptions {
  /** dtype of a linear's simulated weight (by HF weight name); undefined: the simulated weight is not kept */
  simulatedDtype?: (name: string) => SimulatedDtype | undefined;
}

export class LayerSpillStore {
  private readonly open = new Map<string, Promise<SafetensorsFile>>();

  constructor(readonly dir: string, private readonly options: SpillOptions = { simulatedDtype: () => 'F32' }) {}

  /** The spill file of a layer. */
  pathOf(layer: number): string {
    return join(this.dir, `layer-${layer}.safetensors`);
  }

  /** Writes one layer's linears (keyed by HF weight name) and returns their spilled handles. */
  async spill(layer: number, linears: ReadonlyMap<string, QuantizedLinearArrays>): Promise<Map<string, SpilledLinear>> {
    const path = this.pathOf(layer);
    const tensors: TensorToWrite[] = [];
    for (const [name, q] of linears) {
      const dtype = this.options.simulatedDtype?.(name);
      if (dtype !== undefined) {
        tensors.push({ name: `${name}:simulated`, dtype, shape: [q.rows, q.cols], data: dtype === 'F32' ? q.simulated : float32ToBytes(q.simulated, dtype) });
      }
      tensors.push({ name: `${name}:qweight`, dtype: 'U32', shape: [q.rows, Math.ceil(q.cols / 32)], data: q.qweight });
      tensors.push({ name: `${name}:wscale`, dtype: 'F32', shape: [q.rows], data: q.scales });
      if (q.rank > 0) {
        tensors.push({ name: `${name}:lr_a`, dtype: 'F32', shape: [q.rows, q.rank], data: q.lrA });
        tensors.push({ name: `${name}:lr_b`, dtype: 'F32', shape: [q.rank, q.cols], data: q.lrB });
      }
    }
    await writeSafetensors(path, tensors);
    return this.reopen(layer, [...linears].map(([name, q]) => ({ name, rows: q.rows, cols: q.cols, rank: q.rank })));
  }

  /** Handles of linears a spill of `layer` wrote earlier (a resumed run). */
  reopen(layer: number, linears: readonly { name: string; rows: number; cols: number; rank: number }[]): Map<string, SpilledLinear> {
    const path = this.pathOf(layer);
    const handles = new Map<string, SpilledLinear>();
    for (const { name, rows, cols, rank } of linears) {
      handles.set(name, { layer, rows, cols, rank, read: async (part) => (await this.file(path)).readBytes(`${name}:${part}`) });
    }
    return handles;
  }

  private file(path: string): Promise<SafetensorsFile> {
    let file = this.open.get(path);
    if (file === undefined) {
      file = SafetensorsFile.open(path);
      this.open.set(path, file);
    }
    return file;
  }

  /** Closes and deletes the spill file of `layer` (its block is in the outputs); its handles stop working. */
  async removeLayer(layer: number): Promise<void> {
    const path = this.pathOf(layer);
    const file = this.open.get(path);
    this.open.delete(path);
    if (file !== undefined) await (await file.catch(() => undefined))?.close();
    await rm(path, { force: true });
  }

  /** Closes the spill files. */
  async close(): Promise<void> {
    for (const file of this.open.values()) await (await file.catch(() => undefined))?.close();
    this.open.clear();
  }

  /** Closes the spill files and removes the directory. */
  async dispose(): Promise<void> {
    await this.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
