/**
 * One decoder block at a time in the runtime (CPU or GPU), for the quantize pipeline: the same `embed`,
 * `loadBlockWeights` and `run` contract as the ONNX block runner (src/onnx/block-runner.ts), on a one-layer
 * runtime model whose layer is set to the block being run — its float weights (the teacher, or the simulated
 * quantized weights of the student) and its recipe (rotations, activation and attention-operand quantizers).
 * Only one block's weights are on the device at a time; a block is re-sent only when the weights object or the
 * recipe changes. Taps have the ONNX runner's layouts: [batch, seq, features], query / key / value
 * [batch, heads, seq, head_dim], probs [batch, heads, seq, seq].
 */
import { BwqError } from '../errors.js';
import { loadBlockWeights, recipeRotations, BLOCK_ROLES, type BlockWeights } from '../model/block-weights.js';
import type { ModelDir } from '../model/model-dir.js';
import type { BlockRunOptions, TapName } from '../onnx/block-runner.js';
import type { LayerRecipe } from '../quant/recipe.js';
import type { Tensor } from '../tensor.js';
import { loadAddon } from '../native/loader.js';
import { linearDims, loadRuntimeModelFrom, storeOf, type RuntimeAddon, type RuntimeModelHandle, type RuntimeSessionHandle, type RuntimeStateHandle } from './load.js';
import { probsRowCode, quantizerCodes } from './descriptor.js';
import { chunkPositions, loadOnDevice, runtimeError } from './engine.js';
import { deviceOkt, hasOktBinding } from './device-okt.js';
import { deviceRecon, hasReconBinding } from './device-recon.js';
import type { StepperFactory } from '../quant/reconstruct/train.js';
import type { OktDevice } from '../quant/okt.js';
import type { RuntimeDevice } from './session.js';
import type { RotateRows } from '../linalg/matmul.js';

/** The linear-input taps whose Gram matrices the runtime can accumulate over a block's runs. */
export type GramTapName = 'attn_input' | 'attn_context' | 'mlp_input' | 'mlp_hidden';
const GRAM_TAP_CODES: Record<GramTapName, number> = { attn_input: 0, attn_context: 1, mlp_input: 2, mlp_hidden: 3 };
/** Whether a tap is one of the linear inputs whose Gram matrix the runtime accumulates. */
export function isGramTap(tap: string): tap is GramTapName {
  return Object.hasOwn(GRAM_TAP_CODES, tap);
}

export interface EngineRunOptions extends BlockRunOptions {
  /** accumulate H = Σ_t x_t x_tᵀ of these taps over every token of the run in the runtime (on the engine's device;
   *  the accumulators live there across runs, readGram returns and frees them) */
  gramTaps?: readonly GramTapName[];
  /** only these rows (ascending indices b·seq + i) of the linear-input taps come back: [tapRows.length, width] */
  tapRows?: Int32Array;
  /** the input rows are the state's floats [offset, offset + batch·seq·hidden) (the `hidden` argument is then
   *  ignored); the output replaces them ('replace'), comes back to the host ('return') or is dropped ('discard': a
   *  statistics pass wants only the taps); the returned output is empty unless 'return' */
  fromState?: { state: DeviceArray; offset: number; output: StateOutput };
}

export type StateOutput = 'replace' | 'return' | 'discard';

/** Float32 values in the engine's device memory (BlockEngine.createArray): the calibration hidden states kept there
 *  between blocks, or a matrix the quantize numerics multiply by many times (a matmulT operand). */
export interface DeviceArray {
  readonly floats: number;
  /** floats [offset, offset + data.length) from the host */
  write(offset: number, data: Float32Array): void;
  /** floats [offset, offset + count) to the host (into the front of `into` when given: a buffer reused across reads) */
  read(offset: number, count: number, into?: Float32Array): Float32Array;
  free(): void;
}

/** The part of the block-runner contract the quantize pipeline uses. */
export interface BlockEngine {
  loadBlockWeights(layer: number): Promise<BlockWeights>;
  run(layer: number, hidden: Float32Array, batch: number, seq: number, options?: EngineRunOptions):
    Promise<{ output: Float32Array; taps: Map<TapName, Float32Array> }>;
  embed(ids: Int32Array, batch: number, seq: number): Promise<Float32Array>;
  readonly device: string;
  /** c [m, n] = op(a)·op(b) in float32 on the engine's device, op(a) [m, k] (transA: a is [k, m]), op(b) [k, n]
   *  (transB: b is [n, k]); cuBLAS FP32 on a GPU, taking the transpositions as flags (the quantize numerics' large
   *  products, src/pipeline/device-matmul.ts, and the reconstruction's GEMMs); a and b may be device arrays of this
   *  engine (createArray); into: written there (a view of its front returned) when it holds m·n values */
  readonly matmulT?: (a: Float32Array | DeviceArray, transA: boolean, b: Float32Array | DeviceArray, transB: boolean, m: number, k: number, n: number,
    into?: Float32Array) => Promise<Float32Array>;
  /** y = x (R1 ⊗ R2) for x [rows, a·b] on the engine's device (the runtime's kron_rotate: CPU threads or CUDA) */
  readonly rotateRows?: RotateRows;
  /** the Gram matrix [width, width] accumulated by runs with gramTaps (its accumulator is freed) */
  readonly readGram?: (tap: GramTapName) => Float32Array;
  /** `floats` zeroed float32 values in the engine's memory (calibration hidden states, resident product operands; a
   *  one-line error when the device has not that much free); freed by free() or with the engine */
  readonly createArray?: (floats: number) => DeviceArray;
  /** learnOkt (src/quant/okt.ts) in one native call on the engine's device (src/runtime/device-okt.ts): CPU threads, or CUDA with cuBLAS */
  readonly learnOkt?: OktDevice;
  /** the block-wise reconstruction's steps with the student on the engine's GPU (src/runtime/device-recon.ts; CUDA with cuBLAS) */
  readonly reconstructionSteps?: StepperFactory;
  close(): Promise<void>;
}

interface RuntimeBlockAddon extends RuntimeAddon {
  rtSetLayerRecipe(model: RuntimeModelHandle, layer: number, recipe: Float64Array): Int32Array;
  rtRunBlock(session: RuntimeSessionHandle, layer: number, hidden: Float32Array, t: number, out: Float32Array,
    taps: Record<string, Float32Array>, options?: { gram?: Int32Array; rows?: Int32Array; state?: RuntimeStateHandle; stateOffset?: number; inPlace?: boolean;
      discard?: boolean }): void;
  /** settles when c is written (the product runs on the addon's backend thread, beside the JS thread) */
  rtMatmulT?(model: RuntimeModelHandle, a: Float32Array | RuntimeStateHandle, transA: boolean, b: Float32Array | RuntimeStateHandle, transB: boolean,
    m: number, k: number, n: number, c: Float32Array): Promise<void>;
  rtReadGram?(model: RuntimeModelHandle, tap: number, out: Float32Array): void;
  rtStateAlloc?(model: RuntimeModelHandle, floats: number): RuntimeStateHandle;
  rtStateWrite?(state: RuntimeStateHandle, offset: number, data: Float32Array): void;
  rtStateRead?(state: RuntimeStateHandle, offset: number, out: Float32Array): void;
  rtKronRotate?(model: RuntimeModelHandle, x: Float32Array, rows: number, a: number, b: number, r1: Float32Array, r2: Float32Array,
    y: Float32Array): Promise<void>;
}

const TAP_FIELDS: Record<Exclude<TapName, never>, string> = {
  attn_input: 'attnInput', attn_context: 'attnContext', mlp_input: 'mlpInput', mlp_hidden: 'mlpHidden',
  query: 'query', key: 'key', value: 'value', probs: 'probs',
};

/** [batch, seq, heads, hd] (token-major) → [batch, heads, seq, hd]. */
function headMajor(x: Float32Array, batch: number, seq: number, heads: number, hd: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seq; t++) {
      for (let h = 0; h < heads; h++) {
        const src = ((b * seq + t) * heads + h) * hd;
        out.set(x.subarray(src, src + hd), ((b * heads + h) * seq + t) * hd);
      }
    }
  }
  return out;
}

export async function createRuntimeBlockEngine(model: ModelDir, options: { device?: RuntimeDevice; threads?: number } = {}):
  Promise<BlockEngine> {
  const addon = loadAddon() as unknown as RuntimeBlockAddon & { setThreads(n: number): number };
  if (options.threads !== undefined) addon.setThreads(options.threads);
  if (typeof addon.rtRunBlock !== 'function') throw new BwqError('the native addon has no runtime (rebuild with npm rebuild)');
  const c = model.config;
  const where = model.checkpoint.indexFile ?? model.checkpoint.files[0] ?? model.dir;
  // a one-layer model: layer 0 of the checkpoint, float, then replaced by whatever block runs
  const ck = model.checkpoint;
  const one = { ...c, numLayers: 1, quantization: undefined };
  const { loaded } = await loadOnDevice(options.device ?? 'auto', where, (device) => loadRuntimeModelFrom(addon, {
    config: one, weightNames: { ...model.weightNames, layers: [model.weightNames.layers[0]!] },
    stores: [storeOf(ck, where)], quantized: false,
  }, device));
  const handle = loaded.handle;
  let session: { handle: RuntimeSessionHandle; batch: number; seq: number } | undefined;
  let current: { layer: number; weights: BlockWeights; recipeKey: string } | undefined;
  let cached: { layer: number; weights: BlockWeights } | undefined;
  let embedTable: Float32Array | undefined;

  const send = (slot: string, shape: number[], data: Float32Array): void => {
    addon.rtSetTensor(handle, slot, 0, shape, data);
  };

  /** Puts block `layer` with `weights` and `recipe` into the runtime's layer 0. */
  const setBlock = async (layer: number, weights: BlockWeights, recipe: LayerRecipe | undefined): Promise<void> => {
    const recipeKey = JSON.stringify(recipe ?? null);
    if (current?.layer === layer && current.weights === weights && current.recipeKey === recipeKey) return;
    const rotations = recipeRotations(recipe);
    const tensorOf = async (name: string): Promise<Tensor> => {
      const t = weights.extra.get(name) ?? (ck.has(name) ? await ck.readTensor(name) : undefined);
      if (t === undefined) throw new BwqError(`rotation tensor ${name} is neither in the block weights nor in the checkpoint`, { file: where });
      return t;
    };
    const d: number[] = [];
    const dims = linearDims(c);
    for (const role of BLOCK_ROLES) {
      const r = recipe?.linears[role];
      const group = r?.rotation === undefined ? -1 : rotations.findIndex((x) => x.r1 === r.rotation!.r1 && x.r2 === r.rotation!.r2 && x.r3 === r.rotation!.r3);
      const a = group < 0 ? 0 : (await tensorOf(r!.rotation!.r1)).shape[0]!;
      const b = group < 0 ? 0 : (await tensorOf(r!.rotation!.r2)).shape[0]!;
      const rem = group < 0 || r!.rotation!.r3 === undefined ? 0 : (await tensorOf(r!.rotation!.r3)).shape[0]!;
      d.push(0, 0, weights.biases[role] === undefined ? 0 : 1, group, a, b, ...quantizerCodes(r?.quantizer), rem);
    }
    const att = recipe?.attention;
    if (att?.probs.kind === 'binary') throw new BwqError(`layer ${layer}: a binary probability quantizer is not supported by the runtime`, { file: where });
    for (const q of [att?.query, att?.key, att?.probs, att?.value]) d.push(...quantizerCodes(q));
    d.push(probsRowCode(att));
    const rotationOfRole = addon.rtSetLayerRecipe(handle, 0, Float64Array.from(d));
    for (const [r, role] of BLOCK_ROLES.entries()) {
      const j = rotationOfRole[r]!;
      const rot = recipe?.linears[role]?.rotation;
      if (j >= 0 && rot !== undefined) {
        const r1 = await tensorOf(rot.r1);
        const r2 = await tensorOf(rot.r2);
        send(`rotations.${j}.r1`, [...r1.shape], r1.data);
        send(`rotations.${j}.r2`, [...r2.shape], r2.data);
        if (rot.r3 !== undefined) {
          const r3 = await tensorOf(rot.r3);
          send(`rotations.${j}.r3`, [...r3.shape], r3.data);
        }
      }
      const w = weights.linears[role];
      if (w === undefined) throw new BwqError(`layer ${layer} has no ${role}`, { file: where });
      const [n, k] = dims[role];
      send(`layers.0.${role}.weight`, [n, k], w);
      const bias = weights.biases[role];
      if (bias !== undefined) send(`layers.0.${role}.bias`, [n], bias);
    }
    send('layers.0.input_norm', [c.hiddenSize], weights.inputNorm.weight);
    send('layers.0.post_norm', [c.hiddenSize], weights.postAttentionNorm.weight);
    if (weights.qNorm !== undefined) send('layers.0.q_norm', [c.headDim], weights.qNorm);
    if (weights.kNorm !== undefined) send('layers.0.k_norm', [c.headDim], weights.kNorm);
    const missing = addon.rtMissing(handle);
    if (missing !== '') throw new BwqError(`runtime block is incomplete: ${missing} was not set`, { file: where });
    current = { layer, weights, recipeKey };
  };

  const sessionFor = (batch: number, seq: number): RuntimeSessionHandle => {
    if (session === undefined || session.batch !== batch || session.seq !== seq) {
      if (session !== undefined) addon.rtFree(session.handle);
      session = undefined;
      session = { handle: addon.rtSession(handle, batch, seq, chunkPositions(batch, seq)), batch, seq };
    }
    return session.handle;
  };

  const device = addon.rtDevice(handle).device;
  /** An addon call, its error as a one-line BwqError (naming `file` when given). */
  const native = <R>(call: () => R, file?: string): R => {
    try {
      return call();
    } catch (error) {
      throw runtimeError(error, file);
    }
  };
  /** An asynchronous addon call (its argument errors thrown at once, its backend error as the rejection), either
   *  error as native()'s. */
  const nativeAsync = async (call: () => Promise<void>): Promise<void> => {
    try {
      await call();
    } catch (error) {
      throw runtimeError(error);
    }
  };
  const gramWidths: Record<GramTapName, number> = {
    attn_input: c.hiddenSize, attn_context: c.numHeads * c.headDim, mlp_input: c.hiddenSize, mlp_hidden: c.intermediateSize,
  };
  const readGram = (tap: GramTapName): Float32Array => {
    const w = gramWidths[tap];
    const out = new Float32Array(w * w);
    native(() => addon.rtReadGram!(handle, GRAM_TAP_CODES[tap], out));
    return out;
  };
  // the live device arrays and their handles: freed before the model (their memory is the model's backend's)
  const states = new Map<DeviceArray, RuntimeStateHandle>();
  const createArray = (floats: number): DeviceArray => {
    const st = native(() => addon.rtStateAlloc!(handle, floats));
    const state: DeviceArray = {
      floats,
      write(offset, data) {
        native(() => addon.rtStateWrite!(st, offset, data));
      },
      read(offset, count, into) {
        const out = into === undefined ? new Float32Array(count) : into.subarray(0, count);
        native(() => addon.rtStateRead!(st, offset, out));
        return out;
      },
      free() {
        if (states.delete(state)) addon.rtFree(st);
      },
    };
    states.set(state, st);
    return state;
  };
  const operand = (x: Float32Array | DeviceArray): Float32Array | RuntimeStateHandle => {
    if (x instanceof Float32Array) return x;
    const st = states.get(x);
    if (st === undefined) throw new Error('matmulT: the device array was freed or belongs to another engine');
    return st;
  };
  const rotateRows: RotateRows = async (x, rows, r1, a, r2, b) => {
    const y = new Float32Array(rows * a * b);
    await nativeAsync(() => addon.rtKronRotate!(handle, x, rows, a, b, r1, r2, y));
    return y;
  };
  return {
    device,
    ...(typeof addon.rtMatmulT === 'function' ? {
      matmulT: (a: Float32Array | DeviceArray, transA: boolean, b: Float32Array | DeviceArray, transB: boolean, m: number, k: number, n: number,
        into?: Float32Array): Promise<Float32Array> => {
        const out = into !== undefined && into.length >= m * n ? into.subarray(0, m * n) : new Float32Array(m * n);
        return nativeAsync(() => addon.rtMatmulT!(handle, operand(a), transA, operand(b), transB, m, k, n, out)).then(() => out);
      },
    } : {}),
    ...(typeof addon.rtKronRotate === 'function' ? { rotateRows } : {}),
    ...(typeof addon.rtReadGram === 'function' ? { readGram } : {}),
    ...(typeof addon.rtStateAlloc === 'function' ? { createArray } : {}),
    ...((device.startsWith('cpu') || (device.startsWith('cuda') && !device.includes('no cuBLAS'))) && hasOktBinding(addon) ? { learnOkt: deviceOkt(addon, handle) } : {}),
    ...(device.startsWith('cuda') && !device.includes('no cuBLAS') && hasReconBinding(addon) ? { reconstructionSteps: deviceRecon(addon, handle) } : {}),
    loadBlockWeights: (layer) => loadBlockWeights(model, layer),
    async run(layer, hidden, batch, seq, runOptions = {}) {
      if (layer < 0 || layer >= c.numLayers) throw new BwqError(`layer ${layer} out of range (model has ${c.numLayers})`, { file: model.dir });
      const h = c.hiddenSize;
      const from = runOptions.fromState;
      if (from === undefined && hidden.length !== batch * seq * h) throw new Error(`hidden has ${hidden.length} values, expected ${batch}x${seq}x${h}`);
      const stateHandle = from === undefined ? undefined : states.get(from.state);
      if (from !== undefined && stateHandle === undefined) throw new Error('run: the calibration state is not one of this engine\'s live states');
      let weights = runOptions.weights;
      if (weights === undefined) {
        if (cached?.layer !== layer) cached = { layer, weights: await loadBlockWeights(model, layer) };
        weights = cached.weights;
      }
      await setBlock(layer, weights, runOptions.recipe ?? c.quantization?.layers[layer]);
      const s = sessionFor(batch, seq);
      const widths: Record<TapName, number> = {
        attn_input: h, attn_context: c.numHeads * c.headDim, mlp_input: h, mlp_hidden: c.intermediateSize,
        query: c.numHeads * c.headDim, key: c.numKvHeads * c.headDim, value: c.numKvHeads * c.headDim, probs: c.numHeads * seq,
      };
      const tapArrays: Record<string, Float32Array> = {};
      const wanted = [...new Set(runOptions.taps ?? [])];
      const selected = runOptions.tapRows;
      const rowsOf = (t: TapName): number => (selected !== undefined && t in GRAM_TAP_CODES ? selected.length : batch * seq);
      for (const t of wanted) tapArrays[TAP_FIELDS[t]] = new Float32Array(rowsOf(t) * widths[t]);
      const output = new Float32Array(from !== undefined && from.output !== 'return' ? 0 : batch * seq * h);
      const gramTaps = runOptions.gramTaps ?? [];
      if (gramTaps.length > 0 && typeof addon.rtReadGram !== 'function') throw new BwqError('the native addon has no Gram accumulation (rebuild with npm rebuild)');
      const extra = gramTaps.length === 0 && selected === undefined && from === undefined ? undefined : {
        ...(gramTaps.length === 0 ? {} : { gram: Int32Array.from(gramTaps, (t) => GRAM_TAP_CODES[t]) }),
        ...(selected === undefined ? {} : { rows: selected }),
        ...(from === undefined ? {} : { state: stateHandle, stateOffset: from.offset, inPlace: from.output === 'replace', discard: from.output === 'discard' }),
      };
      native(() => {
        if (extra === undefined) addon.rtRunBlock(s, 0, hidden, seq, output, tapArrays);
        else addon.rtRunBlock(s, 0, hidden, seq, output, tapArrays, extra);
      }, where);
      const taps = new Map<TapName, Float32Array>();
      for (const t of wanted) {
        const v = tapArrays[TAP_FIELDS[t]]!;
        if (t === 'query') taps.set(t, headMajor(v, batch, seq, c.numHeads, c.headDim));
        else if (t === 'key' || t === 'value') taps.set(t, headMajor(v, batch, seq, c.numKvHeads, c.headDim));
        else taps.set(t, v);
      }
      return { output, taps };
    },
    async embed(ids, batch, seq) {
      if (ids.length !== batch * seq) throw new Error(`ids has ${ids.length} entries, expected ${batch}x${seq}`);
      embedTable ??= await ck.readFloat32(model.weightNames.embedTokens);
      const h = c.hiddenSize;
      const out = new Float32Array(ids.length * h);
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!;
        if (id < 0 || id >= c.vocabSize) throw new BwqError(`token id ${id} is outside the model's vocabulary (${c.vocabSize})`, { file: where });
        out.set(embedTable.subarray(id * h, (id + 1) * h), i * h);
      }
      return out;
    },
    async close() {
      for (const st of states.values()) addon.rtFree(st);
      states.clear();
      if (session !== undefined) addon.rtFree(session.handle);
      session = undefined;
      addon.rtFree(handle);
    },
  };
}
