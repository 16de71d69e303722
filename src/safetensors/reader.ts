/**
 * Random-access safetensors reader: validates the header on open, then reads single tensors with
 * positioned reads (never the whole file).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { BwqError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { bytesToFloat32, type SafetensorsDtype } from './dtypes.js';

const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;
import { parseHeader, parseHeaderLength, type HeaderEntry } from './header.js';

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** absolute byte offset in the file */
  fileOffset: number;
  byteLength: number;
  file: string;
}

/** Reads exactly `length` bytes at `position`, failing on a short file. */
export async function readExactly(handle: FileHandle, position: number, length: number, file: string): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(out, done, length - done, position + done);
    if (bytesRead === 0) {
      throw new BwqError(`unexpected end of file reading ${length} bytes at offset ${position}`, { file });
    }
    done += bytesRead;
  }
  return out;
}

function ioError(error: unknown, file: string, what: string): BwqError {
  if (error instanceof BwqError) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return new BwqError('file not found', { file, cause: error });
  if (code === 'EISDIR') return new BwqError('is a directory, expected a .safetensors file', { file, cause: error });
  if (code === 'EACCES') return new BwqError('permission denied', { file, cause: error });
  const message = error instanceof Error ? error.message : String(error);
  return new BwqError(`cannot ${what}: ${message}`, { file, cause: error });
}

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Absolute offset of the data region (8 + header length). */
  readonly dataStart: number;
  /** Total file size in bytes. */
  readonly fileSize: number;
  private readonly handle: FileHandle;
  private readonly entries: Map<string, TensorInfo>;
  private closed = false;

  private constructor(path: string, handle: FileHandle, dataStart: number, fileSize: number,
    entries: HeaderEntry[], metadata: Record<string, string>) {
    this.path = path;
    this.handle = handle;
    this.dataStart = dataStart;
    this.fileSize = fileSize;
    this.metadata = metadata;
    this.entries = new Map(entries.map((e) => [e.name, {
      name: e.name, dtype: e.dtype, shape: e.shape, fileOffset: dataStart + e.begin,
      byteLength: e.end - e.begin, file: path,
    }]));
  }

  /** Opens and fully validates the header; BwqError (naming the file) on any problem. */
  static async open(path: string): Promise<SafetensorsFile> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (error) {
      throw ioError(error, path, 'open');
    }
    try {
      const stats = await handle.stat();
      if (stats.isDirectory()) throw new BwqError('is a directory, expected a .safetensors file', { file: path });
      const fileSize = stats.size;
      const prefix = fileSize >= 8 ? await readExactly(handle, 0, 8, path) : new Uint8Array(0);
      const headerLength = parseHeaderLength(prefix, fileSize, path);
      const headerBytes = await readExactly(handle, 8, headerLength, path);
      const dataStart = 8 + headerLength;
      const { entries, metadata } = parseHeader(headerBytes, fileSize - dataStart, path);
      return new SafetensorsFile(path, handle, dataStart, fileSize, entries, metadata);
    } catch (error) {
      await handle.close().catch(() => undefined);
      throw ioError(error, path, 'read');
    }
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.entries.get(name);
    if (info === undefined) throw new BwqError(`no tensor named '${name}'`, { file: this.path });
    return info;
  }

  /** All tensor infos in header order. */
  infos(): TensorInfo[] {
    return [...this.entries.values()];
  }

  /** Raw little-endian bytes of one tensor (positioned read). */
  async readBytes(name: string): Promise<Uint8Array> {
    const info = this.info(name);
    if (this.closed) throw new BwqError(`file already closed (reading '${name}')`, { file: this.path });
    try {
      return await readExactly(this.handle, info.fileOffset, info.byteLength, this.path);
    } catch (error) {
      throw ioError(error, this.path, `read tensor '${name}'`);
    }
  }

  /** Values of one tensor as float32, converted from any dtype. */
  async readFloat32(name: string): Promise<Float32Array> {
    const info = this.info(name);
    const bytes = await this.readBytes(name);
    // Fresh, aligned buffer: reinterpret F32 in place on little-endian hosts.
    if (info.dtype === 'F32' && LITTLE_ENDIAN) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    return bytesToFloat32(bytes, info.dtype);
  }

  async readTensor(name: string): Promise<Tensor> {
    const info = this.info(name);
    return { data: await this.readFloat32(name), shape: [...info.shape] };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.handle.close();
  }
}
