/**
 * Resumable quantize runs. While `bwq quantize` runs, a checkpoint directory beside OUT_DIR,
 * `.<OUT_DIR name>.bwq-checkpoint`, holds what the run has finished:
 *
 *   fingerprint.json      sha256 of the bwq version, the options that change the result, the calibration file
 *                         and every model file (config.json, tokenizer files, *.safetensors, the index; inputDigests,
 *                         which quantize-report.json records as `inputs`)
 *   .layers/layer-N.safetensors   the quantized linears of block N (the spill files, src/pipeline/layer-spill.ts)
 *   rotations-N.safetensors       the OKT factors block N added
 *   hidden-after-N.f32            the calibration hidden states after block N (raw little-endian float32)
 *   state.json                    blocks finished, the sampling RNG's state, recipes, reports, linears
 *
 * After each block, the block's files are written first and state.json last (written aside, then renamed): a
 * run killed at any point (SIGKILL included) leaves a state.json that names only complete files. `--resume`
 * continues after the last finished block when the fingerprint matches, and refuses in one line otherwise.
 * The directory is removed once OUT_DIR is in place; it is bwq's own, so `--force` may delete it.
 * When every block is finished, the write-out marks state.json (`writeOut: true`) before it starts
 * deleting the layer files it has copied into the outputs; a run killed after that cannot resume (its
 * quantized weights are partly gone) and `--resume` says so in one line.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BwqError } from '../errors.js';
import { makeDirectories } from '../fs/mkdir.js';
import { SafetensorsFile } from '../safetensors/reader.js';
import { writeSafetensors } from '../safetensors/writer.js';
import { VERSION } from '../version.js';
import type { LayerRecipe } from '../quant/recipe.js';
import { corpusDigest } from '../data/corpus-digest.js';

/** Calibration hidden states [windows, seqlen, hidden] read and written window by window: the pipeline's stream,
 *  on the host or on the GPU (src/pipeline/calibration-stream.ts). */
export interface HiddenWindows {
  readonly windows: number;
  readonly seqlen: number;
  readonly hidden: number;
  /** `into`: a buffer the windows may be copied into (reused across reads) */
  read(w0: number, n: number, into?: Float32Array): Float32Array;
  write(w0: number, data: Float32Array): void;
}

/** Windows per read or write of the hidden-states file: about 64 MiB (at least one window). */
function windowsPerChunk(window: number): number {
  return Math.max(1, Math.floor((64 << 20) / (4 * window)));
}

const FINGERPRINT = 'fingerprint.json';
const STATE = 'state.json';

/** The checkpoint directory of an OUT_DIR. */
export function checkpointDirOf(outDir: string): string {
  return join(dirname(outDir), `.${basename(outDir)}.bwq-checkpoint`);
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** sha256 of a run's inputs: the calibration file and the model files that decide the result. */
export interface InputDigests {
  /** sha256 of the calibration text (a directory's: src/data/corpus-digest.ts) */
  calib: string;
  /** model file name → sha256 (config.json, *.safetensors, *.safetensors.index.json, tokenizer files), sorted by name */
  model: Record<string, string>;
}

/** Model files whose bytes decide a quantize run's result. */
function isDigestedModelFile(name: string): boolean {
  return name === 'config.json' || name === 'tokenizer.json' || name === 'tokenizer_config.json'
    || name.endsWith('.safetensors') || name.endsWith('.safetensors.index.json');
}

/** sha256 of the calibration file and of every model file that decides the result (the report records them too). */
export async function inputDigests(modelDir: string, calibFile: string): Promise<InputDigests> {
  const model: Record<string, string> = {};
  for (const f of (await readdir(modelDir)).filter(isDigestedModelFile).sort()) model[f] = await sha256File(join(modelDir, f));
  return { calib: await corpusDigest(calibFile), model };
}

/** sha256 over the version, the result-relevant options, the calibration file and the model's files. */
export function runFingerprint(inputs: InputDigests, options: Record<string, unknown>): string {
  const hash = createHash('sha256');
  hash.update(`bwq ${VERSION}\n`);
  hash.update(`${JSON.stringify(options, Object.keys(options).sort())}\n`);
  hash.update(`calib ${inputs.calib}\n`);
  for (const [f, digest] of Object.entries(inputs.model)) hash.update(`${f} ${digest}\n`);
  return hash.digest('hex');
}

/** One finished linear, as state.json lists it (the tensors live in .layers/layer-N.safetensors). */
export interface CheckpointLinear {
  name: string;
  layer: number;
  prefix: string;
  bias: string | undefined;
  rows: number;
  cols: number;
  rank: number;
}

export interface CheckpointState<Report> {
  /** blocks finished (0 … numLayers) */
  completed: number;
  rng: number[];
  recipes: LayerRecipe[];
  reports: Report[];
  linears: CheckpointLinear[];
  /** rotation tensor names by the block that added them */
  rotations: { layer: number; names: string[] }[];
  /** the write-out has begun removing layer files (the run can no longer resume) */
  writeOut?: boolean;
}

export class Checkpoint<Report> {
  private constructor(readonly dir: string, readonly fingerprint: string) {}

  get layersDir(): string {
    return join(this.dir, '.layers');
  }

  /**
   * Opens the checkpoint of OUT_DIR: with `resume`, an existing one whose fingerprint matches (refused in one
   * line otherwise), or a new one when there is none; without `resume`, a new one, refusing when an earlier
   * run left one (unless `force`, which removes it).
   */
  static async open<R>(outDir: string, fingerprint: string, opts: { resume: boolean; force: boolean }):
    Promise<{ checkpoint: Checkpoint<R>; state: CheckpointState<R> | undefined }> {
    const dir = checkpointDirOf(outDir);
    const existing = await readJson<{ fingerprint: string }>(join(dir, FINGERPRINT));
    const state = existing === undefined ? undefined : await readJson<CheckpointState<R>>(join(dir, STATE));
    if (existing !== undefined && !opts.resume) {
      if (!opts.force) {
        const done = state === undefined ? 0 : state.completed;
        throw new BwqError(`an interrupted run left a checkpoint (${done} blocks done) in ${dir}: pass --resume to continue it, or --force to start over`,
          { file: outDir, exitCode: 2 });
      }
      await rm(dir, { recursive: true, force: true });
    } else if (existing !== undefined && existing.fingerprint !== fingerprint) {
      throw new BwqError(`the checkpoint in ${dir} was made with other inputs (model files, calibration file, options or bwq version differ); run without --resume and with --force to start over`,
        { file: outDir, exitCode: 2 });
    } else if (existing !== undefined && state?.writeOut === true) {
      throw new BwqError(`the run in ${dir} was interrupted while writing OUT_DIR, after its layer files had been moved into the output; run without --resume and with --force to start over`,
        { file: outDir, exitCode: 2 });
    } else if (existing !== undefined) {
      return { checkpoint: new Checkpoint<R>(dir, fingerprint), state };
    } else if ((await stat(dir).catch(() => undefined)) !== undefined) {
      throw new BwqError(`${dir} exists but is not a bwq checkpoint; not touching it`, { file: outDir, exitCode: 2 });
    }
    await makeDirectories(dir);
    await writeFile(join(dir, FINGERPRINT), `${JSON.stringify({ fingerprint, bwq_version: VERSION })}\n`);
    return { checkpoint: new Checkpoint<R>(dir, fingerprint), state: undefined };
  }

  /** The hidden states after `completed` blocks, into `out` window by window (host or device stream). */
  async readHidden(completed: number, out: HiddenWindows): Promise<void> {
    const path = join(this.dir, `hidden-after-${completed}.f32`);
    const window = out.seqlen * out.hidden;
    const expected = 4 * out.windows * window;
    const file = await open(path, 'r').catch((error: unknown) => {
      throw new BwqError(`checkpoint is missing ${basename(path)}: ${(error as Error).message}`, { file: this.dir });
    });
    try {
      const { size } = await file.stat();
      if (size !== expected) throw new BwqError(`${basename(path)} has ${size} bytes, expected ${expected}`, { file: this.dir });
      const per = windowsPerChunk(window);
      const buffer = new Float32Array(Math.min(per, out.windows) * window); // one chunk buffer for all reads
      for (let w0 = 0; w0 < out.windows; w0 += per) {
        const chunk = buffer.subarray(0, Math.min(per, out.windows - w0) * window);
        const { bytesRead } = await file.read(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength), 0, chunk.byteLength, 4 * w0 * window);
        if (bytesRead !== chunk.byteLength) throw new BwqError(`${basename(path)} ended early`, { file: this.dir });
        out.write(w0, chunk);
      }
    } finally {
      await file.close();
    }
  }

  /** The rotation tensors the finished blocks added. */
  async readRotations(state: CheckpointState<Report>): Promise<Map<string, { data: Float32Array; shape: number[] }>> {
    const out = new Map<string, { data: Float32Array; shape: number[] }>();
    for (const { layer, names } of state.rotations) {
      if (names.length === 0) continue;
      const f = await SafetensorsFile.open(join(this.dir, `rotations-${layer}.safetensors`));
      try {
        for (const n of names) out.set(n, { data: Float32Array.from(await f.readFloat32(n)), shape: [...f.info(n).shape] });
      } finally {
        await f.close();
      }
    }
    return out;
  }

  /**
   * Records block `layer` as finished: its rotations and the hidden states after it, then state.json (the
   * commit point, written aside and renamed). The block's spill file must already be written.
   */
  async commitBlock(layer: number, hidden: HiddenWindows, rotations: ReadonlyMap<string, { data: Float32Array; shape: number[] }>,
    state: CheckpointState<Report>): Promise<void> {
    if (rotations.size > 0) {
      await writeSafetensors(join(this.dir, `rotations-${layer}.safetensors`),
        [...rotations].map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape, data: t.data })));
    }
    const hiddenPath = join(this.dir, `hidden-after-${layer + 1}.f32`);
    const file = await open(`${hiddenPath}.tmp`, 'w');
    const writeAt = async (x: Float32Array, position: number): Promise<void> => {
      const bytes = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
      for (let done = 0; done < bytes.byteLength;) done += (await file.write(bytes, done, bytes.byteLength - done, position + done)).bytesWritten;
    };
    let pending: Promise<void> = Promise.resolve();
    try {
      const window = hidden.seqlen * hidden.hidden;
      const per = windowsPerChunk(window);
      // two chunk buffers: a chunk comes off the device while the one before it is written
      const chunks = [0, 1].map(() => new Float32Array(Math.min(per, hidden.windows) * window));
      for (let w0 = 0, k = 0; w0 < hidden.windows; w0 += per, k ^= 1) {
        const x = hidden.read(w0, Math.min(per, hidden.windows - w0), chunks[k]);
        await pending;
        pending = writeAt(x, 4 * w0 * window);
      }
      await pending;
    } finally {
      await pending.catch(() => undefined);
      await file.close();
    }
    await rename(`${hiddenPath}.tmp`, hiddenPath);
    await writeFile(join(this.dir, `${STATE}.tmp`), `${JSON.stringify(state)}\n`);
    await rename(join(this.dir, `${STATE}.tmp`), join(this.dir, STATE));
    // the previous block's hidden states are no longer named by state.json
    await rm(join(this.dir, `hidden-after-${layer}.f32`), { force: true });
  }

  /** Marks state.json: the write-out is about to delete layer files (see the file comment). */
  async markWriteOut(): Promise<void> {
    const state = await readJson<CheckpointState<Report>>(join(this.dir, STATE));
    if (state === undefined) return;
    await writeFile(join(this.dir, `${STATE}.tmp`), `${JSON.stringify({ ...state, writeOut: true })}\n`);
    await rename(join(this.dir, `${STATE}.tmp`), join(this.dir, STATE));
  }

  /** Removes the checkpoint (the run's output is in place). */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

async function readJson<T>(path: string): Promise<T | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new BwqError('checkpoint file is not valid JSON (delete the checkpoint and start over)', { file: path });
  }
}
