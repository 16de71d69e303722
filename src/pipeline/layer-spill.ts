/**
 * Keeps memory bounded by one block during `bwq quantize`: when a layer is finished, its quantized
 * linears (simulated weight, packed signs, scales, low-rank factors) are written to a per-layer
 * safetensors file inside the output's temporary directory and dropped from memory; the final
 * writers read them back one tensor at a time (positioned reads) while streaming the outputs.
 */
import { rm } from 'node:fs/promises';
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

/** A spilled linear: its sizes, and a reader of each part's raw little-endian bytes. */
export interface SpilledLinear {
  rows: number;
  cols: number;
  rank: number;
  read(part: LinearPart): Promise<Uint8Array>;
}

export class LayerSpillStore {
  private readonly open = new Map<string, Promise<SafetensorsFile>>();

  constructor(readonly dir: string) {}

  /** Writes one layer's linears (keyed by HF weight name) and returns their spilled handles. */
  async spill(layer: number, linears: ReadonlyMap<string, QuantizedLinearArrays>): Promise<Map<string, SpilledLinear>> {
    const path = join(this.dir, `layer-${layer}.safetensors`);
    const tensors: TensorToWrite[] = [];
    for (const [name, q] of linears) {
      tensors.push({ name: `${name}:simulated`, dtype: 'F32', shape: [q.rows, q.cols], data: q.simulated });
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
    const path = join(this.dir, `layer-${layer}.safetensors`);
    const handles = new Map<string, SpilledLinear>();
    for (const { name, rows, cols, rank } of linears) {
      handles.set(name, { rows, cols, rank, read: async (part) => (await this.file(path)).readBytes(`${name}:${part}`) });
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
