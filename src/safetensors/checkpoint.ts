/**
 * A model checkpoint: one safetensors file, or several shards listed by
 * `model.safetensors.index.json` (`{"metadata": {...}, "weight_map": {tensor: shard file}}`).
 *
 * Resolution order inside a directory:
 *   1. model.safetensors.index.json (sharded)
 *   2. model.safetensors
 *   3. the only *.safetensors file in the directory
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { BwqError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { SafetensorsFile, type TensorInfo } from './reader.js';

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

export class Checkpoint {
  readonly dir: string;
  /** Paths of the safetensors files making up the checkpoint. */
  readonly files: readonly string[];
  /** Path of the index file when sharded. */
  readonly indexFile: string | undefined;
  private readonly shards: readonly SafetensorsFile[];
  private readonly byName: Map<string, SafetensorsFile>;

  private constructor(dir: string, shards: SafetensorsFile[], byName: Map<string, SafetensorsFile>, indexFile: string | undefined) {
    this.dir = dir;
    this.shards = shards;
    this.files = shards.map((s) => s.path);
    this.byName = byName;
    this.indexFile = indexFile;
  }

  /** Opens the checkpoint in a model directory (see resolution order above). */
  static async open(dir: string): Promise<Checkpoint> {
    const dirStat = await stat(dir).catch(() => undefined);
    if (dirStat === undefined) throw new BwqError('model directory not found', { file: dir });
    if (!dirStat.isDirectory()) throw new BwqError('not a directory', { file: dir });
    const indexPath = join(dir, INDEX_FILE);
    if (await isFile(indexPath)) return Checkpoint.openIndex(indexPath);
    const single = join(dir, SINGLE_FILE);
    if (await isFile(single)) return Checkpoint.openFile(single);
    const candidates = (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort();
    if (candidates.length === 1) return Checkpoint.openFile(join(dir, candidates[0]!));
    if (candidates.length === 0) {
      throw new BwqError(`no weights found (expected ${SINGLE_FILE} or ${INDEX_FILE})`, { file: dir });
    }
    throw new BwqError(
      `several .safetensors files (${candidates.join(', ')}) and no ${INDEX_FILE} saying how they fit together`,
      { file: dir });
  }

  /** A checkpoint made of one safetensors file. */
  static async openFile(path: string): Promise<Checkpoint> {
    const file = await SafetensorsFile.open(path);
    return new Checkpoint(dirname(path), [file], new Map(file.names().map((n) => [n, file])), undefined);
  }

  /** A sharded checkpoint described by an index JSON file. */
  static async openIndex(indexPath: string): Promise<Checkpoint> {
    const weightMap = await readWeightMap(indexPath);
    const dir = dirname(indexPath);
    const shardNames = [...new Set(Object.values(weightMap))];
    const shards: SafetensorsFile[] = [];
    const byShard = new Map<string, SafetensorsFile>();
    try {
      for (const shardName of shardNames) {
        const path = join(dir, shardName);
        if (!(await isFile(path))) {
          throw new BwqError(`shard file '${shardName}' listed in ${basename(indexPath)} is missing`, { file: path });
        }
        const file = await SafetensorsFile.open(path);
        shards.push(file);
        byShard.set(shardName, file);
      }
      const byName = new Map<string, SafetensorsFile>();
      for (const [tensor, shardName] of Object.entries(weightMap)) {
        const file = byShard.get(shardName)!;
        if (!file.has(tensor)) {
          throw new BwqError(`tensor '${tensor}' is listed in ${basename(indexPath)} but absent from this shard`, { file: file.path });
        }
        byName.set(tensor, file);
      }
      return new Checkpoint(dir, shards, byName, indexPath);
    } catch (error) {
      await Promise.all(shards.map((s) => s.close().catch(() => undefined)));
      throw error;
    }
  }

  /**
   * Opens whatever `path` is: a model directory, a .safetensors file or an index JSON.
   */
  static async openPath(path: string): Promise<Checkpoint> {
    const s = await stat(path).catch(() => undefined);
    if (s === undefined) throw new BwqError('no such file or directory', { file: path });
    if (s.isDirectory()) return Checkpoint.open(path);
    if (path.endsWith('.json')) return Checkpoint.openIndex(path);
    return Checkpoint.openFile(path);
  }

  /** Tensor names (index order for sharded checkpoints, header order otherwise). */
  names(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  private fileOf(name: string): SafetensorsFile {
    const file = this.byName.get(name);
    if (file === undefined) {
      throw new BwqError(`checkpoint has no tensor named '${name}'`, { file: this.indexFile ?? this.files[0] ?? this.dir });
    }
    return file;
  }

  info(name: string): TensorInfo {
    return this.fileOf(name).info(name);
  }

  /** Metadata of the first shard (or of the single file). */
  get metadata(): Record<string, string> {
    return this.shards[0]?.metadata ?? {};
  }

  /** The opened files (one per shard). */
  safetensorsFiles(): readonly SafetensorsFile[] {
    return this.shards;
  }

  readFloat32(name: string): Promise<Float32Array> {
    return this.fileOf(name).readFloat32(name);
  }

  readTensor(name: string): Promise<Tensor> {
    return this.fileOf(name).readTensor(name);
  }

  readBytes(name: string): Promise<Uint8Array> {
    return this.fileOf(name).readBytes(name);
  }

  async close(): Promise<void> {
    await Promise.all(this.shards.map((s) => s.close()));
  }
}

async function isFile(path: string): Promise<boolean> {
  const s = await stat(path).catch(() => undefined);
  return s !== undefined && s.isFile();
}

/** Reads and validates `weight_map` of an index file: tensor name → shard file name. */
export async function readWeightMap(indexPath: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await readFile(indexPath, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new BwqError(code === 'ENOENT' ? 'index file not found' : `cannot read index file: ${(error as Error).message}`,
      { file: indexPath, cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new BwqError(`invalid index JSON (${(error as Error).message.split('\n')[0]})`, { file: indexPath });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new BwqError('invalid index JSON: not an object', { file: indexPath });
  }
  const weightMap = (json as Record<string, unknown>)['weight_map'];
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new BwqError('invalid index JSON: missing "weight_map" object', { file: indexPath });
  }
  const out: Record<string, string> = {};
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.length === 0) {
      throw new BwqError(`invalid index JSON: weight_map entry for '${tensor}' is not a file name`, { file: indexPath });
    }
    if (isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
      throw new BwqError(`invalid index JSON: shard '${shard}' is outside the checkpoint directory`, { file: indexPath });
    }
    out[tensor] = shard;
  }
  if (Object.keys(out).length === 0) throw new BwqError('invalid index JSON: "weight_map" is empty', { file: indexPath });
  return out;
}
