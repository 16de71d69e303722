/**
 * A safetensors file written tensor by tensor, for writers that fill several files at once (the
 * simulated shards and the packed file of `bwq quantize`, block by block). The header is fixed by
 * the tensor specs given to `create`; the data then arrive in exactly that order through `write`.
 * Same layout as writeSafetensors (src/safetensors/writer.ts). The file is written in place: callers
 * write under a temporary directory that is renamed at the end (src/fs/atomic.ts).
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import { BwqError } from '../errors.js';
import type { SafetensorsDtype } from './dtypes.js';
import { checkLength, encodeHeader, planLayout, writeAll, type Planned, type TensorData } from './writer.js';

/** A tensor's name, dtype and shape (its data comes later). */
export interface TensorSpec {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
}

const NO_DATA = async (): Promise<TensorData> => new Uint8Array(0);

export class SafetensorsStreamWriter {
  private next = 0;

  private constructor(readonly path: string, private readonly handle: FileHandle, private readonly planned: readonly Planned[]) {}

  /** Creates `path` (truncating it) and writes the header of `specs` (in that order) with optional metadata. */
  static async create(path: string, specs: readonly TensorSpec[], metadata?: Record<string, string>): Promise<SafetensorsStreamWriter> {
    const planned = planLayout(path, specs.map((s) => ({ name: s.name, dtype: s.dtype, shape: s.shape, data: NO_DATA })), metadata);
    const header = encodeHeader(planned.map((p) => ({
      name: p.tensor.name, dtype: p.tensor.dtype, shape: p.tensor.shape, begin: p.begin, end: p.begin + p.byteLength,
    })), metadata);
    const handle = await open(path, 'w');
    try {
      const prefix = new Uint8Array(8);
      new DataView(prefix.buffer).setBigUint64(0, BigInt(header.byteLength), true);
      await writeAll(handle, prefix);
      await writeAll(handle, header);
    } catch (error) {
      await handle.close().catch(() => undefined);
      throw error;
    }
    return new SafetensorsStreamWriter(path, handle, planned);
  }

  /** Name of the tensor `write` expects next (undefined once every tensor is written). */
  get expected(): string | undefined {
    return this.planned[this.next]?.tensor.name;
  }

  /** Writes the data of `name`, which must be the next tensor of the header. */
  async write(name: string, data: TensorData): Promise<void> {
    const p = this.planned[this.next];
    if (p === undefined || p.tensor.name !== name) {
      throw new BwqError(`cannot write safetensors: tensor '${name}' written out of order (expected ${p === undefined ? 'no more tensors' : `'${p.tensor.name}'`})`,
        { file: this.path });
    }
    checkLength(this.path, p.tensor, data, p.byteLength);
    await writeAll(this.handle, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.next++;
  }

  /** Closes the file; every tensor of the header must have been written. */
  async close(): Promise<void> {
    await this.handle.close();
    const missing = this.expected;
    if (missing !== undefined) {
      throw new BwqError(`cannot write safetensors: closed before tensor '${missing}' was written`, { file: this.path });
    }
  }

  /** Closes and removes the (incomplete) file. */
  async abort(): Promise<void> {
    await this.handle.close().catch(() => undefined);
    await rm(this.path, { force: true });
  }
}
