/**
 * ONNX subgraphs of a decoder-only transformer: one decoder block (pre-norm attention + MLP with
 * residuals), embeddings, final norm + LM head, and the per-token NLL head.
 *
 * Layouts: hidden states are [B, S, H]; per-head tensors [B, heads, S, hd]; weights are graph
 * values in nn.Linear layout [out, in] ('oi', multiplied as x·Wᵀ through a Transpose that ORT
 * constant-folds for initializers) or Conv1D layout [in, out] ('io', GPT-2, multiplied as x·W).
 * Grouped-query attention never copies K/V: Q [B, nH, S, hd] is viewed as [B, nKv, g·S, hd]
 * (head h uses kv head ⌊h/g⌋, as transformers' repeat_kv), scores are [B, nKv, g·S, S] and are
 * viewed as [B, nKv, g, S, S] to add the [S, S] causal mask. The probs quantizer of a recipe with probsRow
 * 'unmasked' divides by each query row's unmasked keys, counted from the mask (src/quant/attention-probs.ts).
 */
import type { ModelConfig } from '../model/config.js';
import { ATTENTION_OPERANDS, probsOverUnmasked, type LayerRecipe, type LinearRole } from '../quant/recipe.js';
import { BwqError } from '../errors.js';
import { DataType } from './onnx-proto.js';
import type { GraphBuilder } from './graph-builder.js';
import { quantizeOp, rotateOp, validateQuantizer, type RotationResolver } from './recipe-ops.js';

export type TapName = 'attn_input' | 'attn_context' | 'mlp_input' | 'mlp_hidden' | 'query' | 'key' | 'value' | 'probs';
export const TAP_NAMES: readonly TapName[] = ['attn_input', 'attn_context', 'mlp_input', 'mlp_hidden', 'query', 'key', 'value', 'probs'];

export interface NormRef {
  weight: string;
  bias?: string | undefined;
}
export interface LinearRef {
  weight: string;
  layout: 'oi' | 'io';
  bias?: string | undefined;
}
export interface LayerRefs {
  inputNorm: NormRef;
  postAttentionNorm: NormRef;
  linears: Partial<Record<LinearRole, LinearRef>>;
  qNorm?: string | undefined;
  kNorm?: string | undefined;
}

/** Graph values shared by all layers. */
export interface SequenceContext {
  /** [S, rotaryDim] (absent for learned positions) */
  cos?: string;
  sin?: string;
  /** additive mask [S, S] */
  mask: string;
  /** int64 [1] holding S */
  seqDim: string;
}

export const LINEAR_ROLES: readonly LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export function norm(g: GraphBuilder, config: ModelConfig, x: string, ref: NormRef, eps = config.normEps): string {
  if (config.normKind === 'layer') {
    const inputs = ref.bias !== undefined ? [x, ref.weight, ref.bias] : [x, ref.weight];
    return g.node('LayerNormalization', inputs, { axis: -1, epsilon: { float: eps } });
  }
  return rmsNorm(g, x, ref.weight, eps);
}

/** y = w · (x / sqrt(mean(x²) + eps)) over the last axis (transformers' LlamaRMSNorm). */
export function rmsNorm(g: GraphBuilder, x: string, weight: string, eps: number): string {
  const variance = g.node('ReduceMean', [g.mul(x, x)], { axes: [-1], keepdims: 1 });
  const inv = g.node('Reciprocal', [g.node('Sqrt', [g.add(variance, g.constFloat([eps]))])]);
  return g.mul(weight, g.mul(x, inv));
}

export function activation(g: GraphBuilder, config: ModelConfig, x: string): string {
  switch (config.hiddenAct) {
    case 'silu':
      return g.mul(x, g.node('Sigmoid', [x]));
    case 'relu':
      return g.node('Relu', [x]);
    case 'gelu': {
      const e = g.node('Erf', [g.mul(x, g.constFloat([Math.SQRT1_2]))]);
      return g.mul(g.mul(x, g.constFloat([0.5])), g.add(e, g.constFloat([1])));
    }
    case 'gelu_new':
    case 'gelu_pytorch_tanh': {
      // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
      const x3 = g.mul(g.mul(x, x), x);
      const inner = g.mul(g.add(x, g.mul(x3, g.constFloat([0.044715]))), g.constFloat([Math.sqrt(2 / Math.PI)]));
      return g.mul(g.mul(x, g.constFloat([0.5])), g.add(g.node('Tanh', [inner]), g.constFloat([1])));
    }
    default:
      throw new BwqError(`activation "${String(config.hiddenAct)}" is not supported`);
  }
}

/** x·cos + rotate_half(x)·sin on the first `rotaryDim` features of the last axis. */
export function applyRope(g: GraphBuilder, x: string, cos: string, sin: string, headDim: number, rotaryDim: number): string {
  let rot = x;
  let pass: string | undefined;
  if (rotaryDim < headDim) {
    [rot, pass] = g.nodeN('Split', [x, g.constInt64([rotaryDim, headDim - rotaryDim])], 2, { axis: -1 }) as [string, string];
  }
  const half = rotaryDim / 2;
  const [x1, x2] = g.nodeN('Split', [rot, g.constInt64([half, half])], 2, { axis: -1 }) as [string, string];
  const rotated = g.node('Concat', [g.node('Neg', [x2]), x1], { axis: -1 });
  const out = g.add(g.mul(rot, cos), g.mul(rotated, sin));
  return pass === undefined ? out : g.node('Concat', [out, pass], { axis: -1 });
}

export interface LayerBuildOptions {
  recipe: LayerRecipe | undefined;
  resolveRotation: RotationResolver;
  taps: ReadonlySet<TapName>;
  onTap: (tap: TapName, value: string) => void;
  rotaryDim: number;
}

/** One decoder block on x [B, S, H]; returns the block output [B, S, H]. */
export function decoderLayer(
  g: GraphBuilder,
  config: ModelConfig,
  x: string,
  ctx: SequenceContext,
  refs: LayerRefs,
  options: LayerBuildOptions,
): string {
  const { recipe, taps, onTap } = options;
  const nH = config.numHeads;
  const nKv = config.numKvHeads;
  const hd = config.headDim;
  if (nH % nKv !== 0) throw new BwqError(`num_attention_heads ${nH} is not a multiple of num_key_value_heads ${nKv}`);
  const groups = nH / nKv;
  const tap = (name: TapName, value: string): void => {
    if (taps.has(name)) onTap(name, value);
  };

  const inputCache = new Map<string, string>();
  const linearInput = (role: LinearRole, input: string): string => {
    const r = recipe?.linears[role];
    if (r === undefined) return input;
    const key = `${input}|${JSON.stringify(r)}`;
    const cached = inputCache.get(key);
    if (cached !== undefined) return cached;
    let v = input;
    if (r.rotation !== undefined) {
      if (r.rotation.kind !== 'kronecker' && r.rotation.kind !== 'kronecker_remainder') {
        throw new BwqError(`${role}: unknown rotation kind "${String(r.rotation.kind)}"`);
      }
      const { r1, r2, a, b, remainder } = options.resolveRotation(r.rotation);
      v = rotateOp(g, v, r1, r2, a, b, remainder);
    }
    validateQuantizer(r.quantizer, role);
    v = quantizeOp(g, v, r.quantizer);
    inputCache.set(key, v);
    return v;
  };
  const transposed = new Map<string, string>();
  const linear = (role: LinearRole, input: string): string => {
    const ref = refs.linears[role];
    if (ref === undefined) throw new BwqError(`missing weight for ${role}`);
    let w = ref.weight;
    if (ref.layout === 'oi') {
      w = transposed.get(ref.weight) ?? g.transpose(ref.weight, [1, 0]);
      transposed.set(ref.weight, w);
    }
    const y = g.matmul(linearInput(role, input), w);
    return ref.bias === undefined ? y : g.add(y, ref.bias);
  };

  // --- attention ---
  const h = norm(g, config, x, refs.inputNorm);
  tap('attn_input', h);
  const heads = (value: string, count: number, headNorm: string | undefined): string => {
    let v = g.reshape(value, [0, 0, count, hd]);
    if (headNorm !== undefined) v = rmsNorm(g, v, headNorm, config.normEps);
    return g.transpose(v, [0, 2, 1, 3]); // [B, count, S, hd]
  };
  let q = heads(linear('q_proj', h), nH, refs.qNorm);
  let k = heads(linear('k_proj', h), nKv, refs.kNorm);
  let v = heads(linear('v_proj', h), nKv, undefined);
  if (config.rope !== undefined) {
    if (ctx.cos === undefined || ctx.sin === undefined) throw new Error('rope tables missing');
    q = applyRope(g, q, ctx.cos, ctx.sin, hd, options.rotaryDim);
    k = applyRope(g, k, ctx.cos, ctx.sin, hd, options.rotaryDim);
  }
  tap('query', q);
  tap('key', k);
  tap('value', v);
  const att = recipe?.attention;
  if (att !== undefined) {
    for (const name of ATTENTION_OPERANDS) validateQuantizer(att[name], `attention.${name}`);
    q = quantizeOp(g, q, att.query);
    k = quantizeOp(g, k, att.key);
    v = quantizeOp(g, v, att.value);
  }
  const qGrouped = groups === 1 ? q : g.reshape(q, [0, nKv, -1, hd]); // [B, nKv, g·S, hd]
  const scores = g.mul(g.matmul(qGrouped, g.transpose(k, [0, 1, 3, 2])), g.constFloat([1 / Math.sqrt(hd)]));
  let probs: string;
  if (groups === 1) {
    probs = g.node('Softmax', [g.add(scores, ctx.mask)], { axis: -1 });
  } else {
    const shape5 = g.node('Concat', [g.constInt64([0, nKv, groups, -1]), ctx.seqDim], { axis: 0 });
    const masked = g.add(g.node('Reshape', [scores, shape5]), ctx.mask);
    const shape4 = g.node('Concat', [g.constInt64([0, nH, -1]), ctx.seqDim], { axis: 0 });
    probs = g.node('Reshape', [g.node('Softmax', [masked], { axis: -1 }), shape4]); // [B, nH, S, S]
  }
  tap('probs', probs);
  if (att !== undefined) probs = quantizeOp(g, probs, att.probs, probsOverUnmasked(att) ? unmaskedKeys(g, ctx.mask) : undefined);
  let context: string;
  if (groups === 1) {
    context = g.matmul(probs, v); // [B, nH, S, hd]
  } else {
    const shapeG = g.node('Concat', [g.constInt64([0, nKv, -1]), ctx.seqDim], { axis: 0 });
    context = g.reshape(g.matmul(g.node('Reshape', [probs, shapeG]), v), [0, nH, -1, hd]);
  }
  context = g.reshape(g.transpose(context, [0, 2, 1, 3]), [0, 0, nH * hd]);
  tap('attn_context', context);
  const afterAttention = g.add(x, linear('o_proj', context));

  // --- MLP ---
  const m = norm(g, config, afterAttention, refs.postAttentionNorm);
  tap('mlp_input', m);
  let hidden: string;
  if (refs.linears.gate_proj !== undefined) {
    hidden = g.mul(activation(g, config, linear('gate_proj', m)), linear('up_proj', m));
  } else {
    hidden = activation(g, config, linear('up_proj', m));
  }
  tap('mlp_hidden', hidden);
  return g.add(afterAttention, linear('down_proj', hidden));
}

/** The unmasked keys of each query row, [S, 1] float: the entries where the additive mask [S, S] is 0. */
function unmaskedKeys(g: GraphBuilder, mask: string): string {
  const visible = g.node('Cast', [g.node('Equal', [mask, g.constFloat([0])])], { to: DataType.FLOAT });
  return g.node('ReduceSum', [visible, g.constInt64([-1])], { keepdims: 1 });
}

/** Float32 graph inputs for the sequence context (cos/sin/mask) plus the S dimension taken from `mask`. */
export function sequenceInputs(g: GraphBuilder, config: ModelConfig, rotaryDim: number): SequenceContext {
  const mask = g.input('mask', DataType.FLOAT, ['S', 'S']);
  const seqDim = g.node('Slice', [g.node('Shape', [mask]), g.constInt64([0]), g.constInt64([1])]);
  if (config.rope === undefined) return { mask, seqDim };
  const cos = g.input('cos', DataType.FLOAT, ['S', rotaryDim]);
  const sin = g.input('sin', DataType.FLOAT, ['S', rotaryDim]);
  return { cos, sin, mask, seqDim };
}

/** Token (+ learned position) embeddings of ids [B, S] (int64). */
export function embeddings(g: GraphBuilder, ids: string, embedTokens: string, embedPositions: string | undefined, seqDim: string): string {
  const tokens = g.node('Gather', [embedTokens, ids], { axis: 0 });
  if (embedPositions === undefined) return tokens;
  const positions = g.node('Slice', [embedPositions, g.constInt64([0]), seqDim, g.constInt64([0])]);
  return g.add(tokens, positions);
}

/** Logits [B, S, V] = final hidden · lmHeadᵀ (lmHead [V, H]). */
export function lmHead(g: GraphBuilder, hidden: string, weight: string): string {
  return g.matmul(hidden, g.transpose(weight, [1, 0]));
}

/**
 * Per-token NLL [B, S-1] of ids[:, t+1] under the logits of position t (logsumexp − target logit), from the final
 * normed hidden states (the last position is dropped before the LM head).
 */
export function nllHead(g: GraphBuilder, hidden: string, weight: string, ids: string): string {
  const big = Number.MAX_SAFE_INTEGER;
  const head = g.node('Slice', [hidden, g.constInt64([0]), g.constInt64([-1]), g.constInt64([1])]);
  const logits = lmHead(g, head, weight);
  // -log softmax(z)[y] = logsumexp(z) - z[y]  (ORT's ReduceLogSumExp subtracts the max first)
  const lse = g.node('ReduceLogSumExp', [logits], { axes: [-1], keepdims: 1 });
  const targets = g.node('Unsqueeze', [g.node('Slice', [ids, g.constInt64([1]), g.constInt64([big]), g.constInt64([1])]), g.constInt64([2])]);
  const picked = g.node('GatherElements', [logits, targets], { axis: 2 });
  return g.node('Squeeze', [g.sub(lse, picked), g.constInt64([2])]);
}
