/**
 * openRuntime: a model directory (float, or a quantized OUT_DIR) loaded into the native runtime on the
 * CPU or the GPU, with a KV cache for `batch` sequences, as a RuntimeSession (src/runtime/session.ts).
 * Device 'auto' takes CUDA when the CUDA library is built and a GPU answers, else the CPU (notice on
 * stderr); 'cuda' without a usable GPU is an error.
 */
import { BwqError } from '../errors.js';
import type { ModelDir } from '../model/model-dir.js';
import { loadAddon } from '../native/loader.js';
import type { ModelConfig } from '../model/config.js';
import { loadRuntimeModel, loadRuntimeModelFrom, type LoadedModel, type ModelSource, type RuntimeAddon, type RuntimeModelHandle } from './load.js';
import type { LogitsWanted, OpenRuntimeOptions, RuntimeDevice, RuntimeSession } from './session.js';

/** Rows (batch × positions) one forward chunk may hold: bounds the scratch memory. */
const MAX_CHUNK_ROWS = 4096;

/** Positions per forward chunk for `batch` sequences of up to `maxSeq` positions. */
export function chunkPositions(batch: number, maxSeq: number): number {
  return Math.max(1, Math.min(maxSeq, Math.floor(MAX_CHUNK_ROWS / batch)));
}

/**
 * Loads onto the device asked for: 'cpu', 'cuda' (an error without a usable GPU), or 'auto' (CUDA, else the CPU
 * with a notice saying why).
 */
export async function loadOnDevice(want: RuntimeDevice, label: string,
  load: (device: 'cpu' | 'cuda') => Promise<LoadedModel>): Promise<{ loaded: LoadedModel; notice: string | undefined }> {
  if (want === 'cpu') return { loaded: await load('cpu'), notice: undefined };
  try {
    return { loaded: await load('cuda'), notice: undefined };
  } catch (error) {
    const message = (error as Error).message;
    if (want === 'cuda' || !/^CUDA unavailable/.test(message)) {
      throw error instanceof BwqError ? error : new BwqError(message, { file: label, cause: error });
    }
    return { loaded: await load('cpu'), notice: `${message}; running on the CPU` };
  }
}

/** The addon's runtime functions; BwqError when the addon is missing or predates the runtime. */
export function runtimeAddon(): RuntimeAddon {
  const addon = loadAddon() as unknown as Partial<RuntimeAddon> & { setThreads(n: number): number };
  if (typeof addon.rtOpen !== 'function') throw new BwqError('the native addon has no runtime (rebuild with npm rebuild)');
  return addon as RuntimeAddon;
}

/** An addon runtime error as a one-line BwqError (its text without the "bwq runtime: " prefix), naming `file` when given. */
export function runtimeError(error: unknown, file?: string): BwqError {
  return new BwqError((error as Error).message.replace(/^bwq runtime: /, ''), { cause: error, ...(file === undefined ? {} : { file }) });
}

/** The runtime error text as a BwqError (native errors are one line already). */
function wrapNative<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (error instanceof BwqError) throw error;
    throw runtimeError(error, file);
  }
}

/** A model loaded into the runtime; sessions (KV cache + scratch) are opened on it. */
export interface RuntimeModel {
  readonly device: string;
  /** Set when 'auto' fell back to the CPU: why CUDA was not used. */
  readonly notice: string | undefined;
  readonly packedLinears: number;
  /** Bytes the weights take on the device. */
  readonly modelBytes: number;
  openSession(batch: number, maxSeq: number): RuntimeSession;
  /** Frees the weights (sessions must be closed first). */
  close(): void;
}

export interface RuntimeOpenResult extends RuntimeSession {
  readonly notice: string | undefined;
  readonly packedLinears: number;
}

/** Loads the model's tensors into the CPU or GPU runtime. */
export async function loadRuntime(dir: ModelDir, options: { device?: OpenRuntimeOptions['device']; threads?: number } = {}):
  Promise<RuntimeModel> {
  return loadWith(dir.dir, (addon, device) => loadRuntimeModel(addon, dir, device), options);
}

/** The same for a model source that is not a directory (random weights for benchmarks). */
export async function loadRuntimeFromSource(source: ModelSource, options: { device?: OpenRuntimeOptions['device']; threads?: number } = {}):
  Promise<RuntimeModel> {
  return loadWith(source.stores[source.stores.length - 1]!.label, (addon, device) => loadRuntimeModelFrom(addon, source, device),
    options, source.config);
}

async function loadWith(label: string, load: (addon: RuntimeAddon, device: 'cpu' | 'cuda') => Promise<LoadedModel>,
  options: { device?: OpenRuntimeOptions['device']; threads?: number }, config?: ModelConfig): Promise<RuntimeModel> {
  const addon = runtimeAddon();
  if (options.threads !== undefined) (addon as unknown as { setThreads(n: number): number }).setThreads(options.threads);
  const { loaded, notice } = await loadOnDevice(options.device ?? 'auto', label, (device) => load(addon, device));
  const model = loaded.handle;
  let device = '';
  return {
    get device() {
      return device;
    },
    notice,
    packedLinears: loaded.packedLinears,
    modelBytes: loaded.modelBytes,
    openSession(batch: number, maxSeq: number): RuntimeSession {
      const s = openSession(addon, model, config ?? loaded.description.config, label, batch, maxSeq);
      device = s.device;
      return s;
    },
    close() {
      addon.rtFree(model);
    },
  };
}

function openSession(addon: RuntimeAddon, model: RuntimeModelHandle, c: ModelConfig, label: string, batch: number,
  maxSeq: number): RuntimeSession {
  if (!Number.isInteger(batch) || batch < 1) throw new RangeError(`batch must be a positive integer, got ${batch}`);
  if (!Number.isInteger(maxSeq) || maxSeq < 1) throw new RangeError(`maxSeq must be a positive integer, got ${maxSeq}`);
  const maxChunk = chunkPositions(batch, maxSeq);
  const session = wrapNative(label, () => addon.rtSession(model, batch, maxSeq, maxChunk));
  const info = addon.rtInfo(session);
  const vocab = c.vocabSize;
  let closed = false;
  return {
    config: c,
    device: info.device,
    batch,
    maxSeq,
    get position() {
      return addon.rtInfo(session).position;
    },
    residentBytes: info.modelBytes + info.sessionBytes,
    get replaying() {
      return addon.rtInfo(session).replaying;
    },
    reset() {
      addon.rtReset(session);
    },
    forward(ids: Int32Array, t: number, logits: LogitsWanted): Float32Array {
      if (ids.length !== batch * t) throw new RangeError(`ids has ${ids.length} elements, expected ${batch}x${t}`);
      const mode = logits === 'none' ? 0 : logits === 'last' ? 1 : 2;
      const out = new Float32Array(mode === 0 ? 0 : mode === 1 ? batch * vocab : batch * t * vocab);
      wrapNative(label, () => addon.rtForward(session, ids, t, mode, mode === 0 ? null : out));
      return out;
    },
    nll(ids: Int32Array, t: number) {
      if (ids.length !== batch * t) throw new RangeError(`ids has ${ids.length} elements, expected ${batch}x${t}`);
      const sum = wrapNative(label, () => addon.rtNll(session, ids, t));
      return { sum, count: batch * (t - 1) };
    },
    close() {
      if (closed) return;
      closed = true;
      addon.rtFree(session);
    },
  };
}

/** A model and one session on it; closing the session frees the model too. */
export async function openRuntime(dir: ModelDir, options: OpenRuntimeOptions = {}): Promise<RuntimeOpenResult> {
  const model = await loadRuntime(dir, options);
  let session: RuntimeSession;
  try {
    session = model.openSession(options.batch ?? 1, options.maxSeq ?? dir.config.maxPositionEmbeddings);
  } catch (error) {
    model.close();
    throw error;
  }
  return Object.assign(Object.create(session) as RuntimeSession, {
    notice: model.notice,
    packedLinears: model.packedLinears,
    close() {
      session.close();
      model.close();
    },
  });
}
