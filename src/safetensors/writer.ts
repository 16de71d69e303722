/**
 * Streaming safetensors writer. The header is computed from dtypes and shapes alone, then tensor
 * data is written one tensor at a time through a file handle (lazy producers are awaited one by
 * one, so a whole model never has to sit in memory). The file appears atomically (temp + rename).
 *
 * Layout written (same as Python's safetensors):
 *   u64 LE N | N bytes of compact JSON padded with spaces to a multiple of 8 | data
 *   JSON: {"__metadata__":{…}, "<name>":{"dtype":"F32","shape":[…],"data_offsets":[begin,end]}, …}
 *   (metadata first when given; tensors in the given order, data contiguous in that order).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { BwqError } from '../errors.js';
import { writeAtomically } from '../fs/atomic.js';
import { dtypeByteSize, isSafetensorsDtype, type SafetensorsDtype } from './dtypes.js';

export type TensorData = Uint8Array | Float32Array | Float64Array | Int8Array | Int16Array | Int32Array
  | BigInt64Array | Uint16Array | Uint32Array | BigUint64Array;

export interface TensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  /** data's bytes must equal dtype size x shape */
  data: TensorData | (() => Promise<TensorData>);
}

export interface Planned {
  tensor: TensorToWrite;
  byteLength: number;
  begin: number;
}

/** Header bytes (JSON + space padding to a multiple of 8) for the given layout. */
export function encodeHeader(
  entries: readonly { name: string; dtype: SafetensorsDtype; shape: readonly number[]; begin: number; end: number }[],
  metadata: Record<string, string> | undefined,
): Uint8Array {
  const parts: string[] = [];
  if (metadata !== undefined) {
    const meta = Object.entries(metadata).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',');
    parts.push(`"__metadata__":{${meta}}`);
  }
  for (const e of entries) {
    parts.push(`${JSON.stringify(e.name)}:{"dtype":"${e.dtype}","shape":[${e.shape.join(',')}],"data_offsets":[${e.begin},${e.end}]}`);
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const out = new Uint8Array(padded).fill(0x20);
  out.set(json);
  return out;
}

/** Checks names, dtypes, shapes (and the lengths of eager data) and assigns each tensor its data offsets. */
export function planLayout(path: string, tensors: readonly TensorToWrite[], metadata: Record<string, string> | undefined): Planned[] {
  const fail = (problem: string): never => {
    throw new BwqError(`cannot write safetensors: ${problem}`, { file: path });
  };
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') fail(`metadata value of '${k}' is not a string`);
    }
  }
  const seen = new Set<string>();
  const planned: Planned[] = [];
  let offset = 0;
  for (const tensor of tensors) {
    if (tensor.name === '__metadata__') fail(`'__metadata__' is not a valid tensor name`);
    if (seen.has(tensor.name)) fail(`duplicate tensor name '${tensor.name}'`);
    seen.add(tensor.name);
    if (!isSafetensorsDtype(tensor.dtype)) fail(`tensor '${tensor.name}': unknown dtype '${String(tensor.dtype)}'`);
    let elements = 1;
    for (const d of tensor.shape) {
      if (!Number.isSafeInteger(d) || d < 0) fail(`tensor '${tensor.name}': bad shape [${tensor.shape.join(', ')}]`);
      elements *= d;
    }
    const byteLength = elements * dtypeByteSize(tensor.dtype);
    if (typeof tensor.data !== 'function') checkLength(path, tensor, tensor.data, byteLength);
    planned.push({ tensor, byteLength, begin: offset });
    offset += byteLength;
  }
  return planned;
}

export function checkLength(path: string, tensor: TensorToWrite, data: TensorData, byteLength: number): void {
  if (data.byteLength !== byteLength) {
    throw new BwqError(
      `cannot write safetensors: tensor '${tensor.name}' has ${data.byteLength} bytes of data but ${tensor.dtype} [${tensor.shape.join(', ')}] needs ${byteLength}`,
      { file: path });
  }
}

export async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.byteLength - done);
    done += bytesWritten;
  }
}

/** Writes tensors (in the given order) and optional string metadata to `path`, atomically. */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<void> {
  const planned = planLayout(path, tensors, metadata);
  const header = encodeHeader(planned.map((p) => ({
    name: p.tensor.name, dtype: p.tensor.dtype, shape: p.tensor.shape, begin: p.begin, end: p.begin + p.byteLength,
  })), metadata);
  await writeAtomically(path, async (temp) => {
    const handle = await open(temp, 'w');
    try {
      const prefix = new Uint8Array(8);
      new DataView(prefix.buffer).setBigUint64(0, BigInt(header.byteLength), true);
      await writeAll(handle, prefix);
      await writeAll(handle, header);
      for (const p of planned) {
        const data = typeof p.tensor.data === 'function' ? await p.tensor.data() : p.tensor.data;
        checkLength(path, p.tensor, data, p.byteLength);
        await writeAll(handle, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      }
    } finally {
      await handle.close();
    }
  });
}
