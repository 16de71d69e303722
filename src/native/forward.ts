/**
 * `bwq eval --backend native`: the decoder forward pass in TypeScript with every packed linear
 * running through the native 1-bit kernels (src/native/kernels.ts), or through the JavaScript
 * reference kernels when the addon is not built. Supports llama, mistral, qwen2 and qwen3:
 * embedding → L × [RMSNorm → q/k/v (+bias) → qk-norm → RoPE → causal GQA → o_proj → residual →
 * RMSNorm → SwiGLU MLP → residual] → RMSNorm → lm_head. See docs/NATIVE_FORWARD.md.
 */
import { join } from 'node:path';
import { BwqError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { ModelDir } from '../model/model-dir.js';
import { openPackedFile } from '../model/packed-file.js';
import { causalAttention } from './attention.js';
import { createFloatGemm, type FloatGemm, type FloatGemmMode } from './float-gemm.js';
import { loadNativeKernels, type NativeDevice, type NativeKernels } from './kernels.js';
import type { ActivationCodes } from './activation-codes.js';
import { loadNativeModel, tensorSourceOf, type NativeLayer, type NativeModel, type TensorSource } from './packed-model.js';
import { applyLinear, prepareInput } from './quant-linear.js';
import { createReferenceKernels, type IntegerGemmKernels } from './reference-kernels.js';
import { applyRope, ropeTables, type RopeTables } from './rope.js';
import { inverseFrequencies } from '../onnx/rope.js';
import {
  activation, addInPlace, gatedActivation, gatherRows, negativeLogLikelihood, rmsNormRows,
} from './transformer-ops.js';

/** D's kernel interface; the JavaScript reference kernels implement it too. */
export type ForwardKernels = NativeKernels;

/** B's ModelRunner plus the kernel backend in use. */
export interface NativeModelRunner {
  readonly config: ModelConfig;
  logits(ids: Int32Array, batch: number, seq: number): Promise<Float32Array>;
  nll(ids: Int32Array, batch: number, seq: number): Promise<{ sum: number; count: number }>;
  close(): Promise<void>;
  /** e.g. 'cpu (avx2)', 'cuda', 'js-reference' */
  readonly backend: string;
  /** Set when the addon could not be used and the JavaScript reference kernels run instead. */
  readonly notice: string | undefined;
  /** Number of linears running from packed 1-bit weights. */
  readonly packedLinears: number;
}

export interface NativeRunnerOptions {
  device?: NativeDevice;
  /** Kernels to use instead of loading the addon (tests). */
  kernels?: ForwardKernels;
  /** Float GEMMs (lm_head, float attention, unpacked linears): 'ort' (default, MLAS) or 'js'. */
  floatGemm?: FloatGemmMode;
  /** onnxruntime threads for the float GEMMs. */
  threads?: number;
  /** Print the fallback notice on stderr (default true). */
  printNotice?: boolean;
}

/**
 * D's kernels (src/native/kernels.ts), on CUDA with the packed weights kept on the GPU (they never change);
 * when the addon is not built (or cannot load) and the device is not 'cuda', the JavaScript reference
 * kernels, with a notice saying so.
 */
export function loadForwardKernels(device: NativeDevice): ForwardKernels {
  try {
    return loadNativeKernels({ device, residentWeights: true });
  } catch (error) {
    if (device === 'cuda') {
      if (error instanceof BwqError) throw error;
      throw new BwqError(`CUDA kernels unavailable: ${(error as Error).message}`, { cause: error });
    }
    const reason = error instanceof BwqError ? error.oneLine() : (error as Error).message;
    return createReferenceKernels(`native addon not available (${reason}); using the JavaScript reference kernels (slow)`);
  }
}

/** Float path state shared by all calls of one runner. */
class NativeForward {
  private readonly tables = new Map<number, RopeTables>();
  private readonly act: (x: number) => number;

  constructor(readonly model: NativeModel, readonly kernels: IntegerGemmKernels, readonly gemm: FloatGemm,
    private readonly file: string) {
    this.act = activation(model.config.hiddenAct);
  }

  private rope(seq: number): RopeTables | undefined {
    const rope = this.model.config.rope;
    if (rope === undefined) return undefined;
    // Tables are cached per length (eval never runs past max_position_embeddings, where `dynamic`
    // equals `default`).
    let t = this.tables.get(seq);
    if (t === undefined) {
      const inv = inverseFrequencies(this.model.config);
      t = ropeTables(inv, seq);
      this.tables.set(seq, t);
    }
    return t;
  }

  /** Final-norm hidden states [seq, hidden] of one sequence. */
  async hidden(ids: Int32Array): Promise<Float32Array> {
    const c = this.model.config;
    const seq = ids.length;
    const h = gatherRows(this.model.embedTokens, c.vocabSize, c.hiddenSize, ids);
    const tables = this.rope(seq);
    for (const layer of this.model.layers) await this.block(layer, h, seq, tables);
    return rmsNormRows(h, seq, c.hiddenSize, this.model.finalNorm, c.normEps);
  }

  private async block(layer: NativeLayer, h: Float32Array, seq: number, tables: RopeTables | undefined): Promise<void> {
    const c = this.model.config;
    const H = c.hiddenSize;
    const L = layer.linears;
    // attention
    const x = rmsNormRows(h, seq, H, layer.inputNorm, c.normEps);
    const shared = new Map<string, ActivationCodes>();
    const run = async (role: keyof typeof L, input: Float32Array, cols: number): Promise<Float32Array> => {
      const lin = L[role];
      let codes = shared.get(lin.input.key);
      if (codes === undefined) {
        codes = await prepareInput(input, seq, cols, lin.input, this.gemm);
        shared.set(lin.input.key, codes);
      }
      return applyLinear(lin, codes, seq, this.kernels, this.gemm);
    };
    const q = await run('q_proj', x, H);
    const k = await run('k_proj', x, H);
    const v = await run('v_proj', x, H);
    if (layer.qNorm !== undefined) rmsNormRows(q, seq * c.numHeads, c.headDim, layer.qNorm, c.normEps, q);
    if (layer.kNorm !== undefined) rmsNormRows(k, seq * c.numKvHeads, c.headDim, layer.kNorm, c.normEps, k);
    if (tables !== undefined) {
      applyRope(q, seq, c.numHeads, c.headDim, tables);
      applyRope(k, seq, c.numKvHeads, c.headDim, tables);
    }
    const window = c.slidingWindow !== undefined && seq > c.slidingWindow ? c.slidingWindow : undefined;
    const ctx = await causalAttention(q, k, v, {
      seq, numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, slidingWindow: window,
    }, layer.attention, this.kernels, this.gemm);
    shared.clear();
    addInPlace(h, await run('o_proj', ctx, c.numHeads * c.headDim));
    // MLP
    const x2 = rmsNormRows(h, seq, H, layer.postAttentionNorm, c.normEps);
    shared.clear();
    const gate = await run('gate_proj', x2, H);
    const up = await run('up_proj', x2, H);
    const mid = gatedActivation(gate, up, this.act);
    shared.clear();
    addInPlace(h, await run('down_proj', mid, c.intermediateSize));
  }
}

function checkIds(ids: Int32Array, batch: number, seq: number, config: ModelConfig): void {
  const vocab = config.vocabSize;
  if (!Number.isInteger(batch) || !Number.isInteger(seq) || batch < 1 || seq < 1) {
    throw new RangeError(`bad batch ${batch} / seq ${seq}`);
  }
  if (seq > config.maxPositionEmbeddings) {
    throw new BwqError(`sequence length ${seq} exceeds max_position_embeddings ${config.maxPositionEmbeddings}`);
  }
  if (ids.length !== batch * seq) throw new RangeError(`ids has ${ids.length} elements, expected ${batch}x${seq}`);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id < 0 || id >= vocab) throw new BwqError(`token id ${id} is outside the model's vocabulary (${vocab})`);
  }
}

/** Rows of logits computed this many positions at a time in nll (bounds memory). */
const NLL_CHUNK = 256;

/** A runner over an already loaded model (tests build NativeModel from in-memory tensors). */
export function nativeRunnerFromModel(model: NativeModel, kernels: ForwardKernels, file = '<model>',
  onClose: () => Promise<void> = async () => undefined, gemm: FloatGemm = createFloatGemm('ort')): NativeModelRunner {
  const c = model.config;
  const fwd = new NativeForward(model, kernels, gemm, file);
  const V = c.vocabSize;
  const H = c.hiddenSize;
  const backend = kernels.gpu ? 'cuda' : kernels.cpuFeatures === 'js-reference' ? 'js-reference' : `cpu (${kernels.cpuFeatures})`;
  return {
    config: c,
    backend,
    notice: kernels.notice,
    packedLinears: model.packedLinears,
    async logits(ids, batch, seq) {
      checkIds(ids, batch, seq, c);
      const out = new Float32Array(batch * seq * V);
      for (let b = 0; b < batch; b++) {
        const hn = await fwd.hidden(ids.subarray(b * seq, (b + 1) * seq));
        out.set(await gemm.transB(hn, seq, H, model.lmHead, V), b * seq * V);
      }
      return out;
    },
    async nll(ids, batch, seq) {
      checkIds(ids, batch, seq, c);
      let sum = 0;
      let count = 0;
      for (let b = 0; b < batch; b++) {
        const row = ids.subarray(b * seq, (b + 1) * seq);
        const hn = await fwd.hidden(row);
        for (let t0 = 0; t0 < seq - 1; t0 += NLL_CHUNK) {
          const rows = Math.min(NLL_CHUNK, seq - 1 - t0);
          const logits = await gemm.transB(hn.subarray(t0 * H, (t0 + rows) * H), rows, H, model.lmHead, V);
          for (let r = 0; r < rows; r++) sum += negativeLogLikelihood(logits, r * V, V, row[t0 + r + 1]!);
          count += rows;
        }
      }
      return { sum, count };
    },
    close: onClose,
  };
}

/**
 * The native runner of a model directory. For a quantized model (config.json with
 * quantization_config) the linears come from the packed file it names; a float model runs
 * entirely in float (useful as a check of the float path).
 */
export async function createNativeModelRunner(model: ModelDir, options: NativeRunnerOptions = {}):
  Promise<NativeModelRunner> {
  const q = model.config.quantization;
  const checkpointLabel = model.checkpoint.files.length === 1 ? model.checkpoint.files[0]! : model.dir;
  const checkpoint: TensorSource = tensorSourceOf(model.checkpoint, checkpointLabel);
  const opened = await openPackedFile(model);
  const packedFile = opened?.file;
  const packed: TensorSource | undefined = opened === undefined ? undefined : tensorSourceOf(opened.file, opened.path);
  try {
    const native = await loadNativeModel(model.config, model.weightNames, packed, checkpoint);
    const kernels = options.kernels ?? loadForwardKernels(options.device ?? 'auto');
    if (kernels.notice !== undefined && options.printNotice !== false) {
      process.stderr.write(`${kernels.notice.startsWith('bwq:') ? '' : 'bwq: notice: '}${kernels.notice}\n`);
    }
    return nativeRunnerFromModel(native, kernels, packed?.label ?? checkpointLabel, async () => {
      await packedFile?.close();
    }, createFloatGemm(options.floatGemm ?? 'ort', options.threads));
  } catch (error) {
    await packedFile?.close();
    throw error;
  }
}
