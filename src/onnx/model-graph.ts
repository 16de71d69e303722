/**
 * Whole-model ONNX graphs built from a checkpoint: ids [B, S] (int64) → logits [B, S, V] or
 * per-token NLL [B, S-1], with the recipe ops of `config.quantization` inserted per layer.
 * Also the partial graphs the block runner uses (embeddings; final norm + LM head).
 */
import type { ModelConfig } from '../model/config.js';
import type { LayerWeightNames, LinearWeightNames } from '../model/weights.js';
import type { ModelDir } from '../model/model-dir.js';
import type { KroneckerRotation, LayerRecipe, LinearRole } from '../quant/recipe.js';
import { rotationTensorNamesOf } from '../quant/recipe.js';
import { BwqError } from '../errors.js';
import { DataType } from './onnx-proto.js';
import { GraphBuilder } from './graph-builder.js';
import { CheckpointWeights, type ExternalDataLayout } from './checkpoint-weights.js';
import {
  decoderLayer,
  embeddings,
  lmHead,
  nllHead,
  norm,
  sequenceInputs,
  type LayerRefs,
  type LinearRef,
} from './decoder-graph.js';
import { inverseFrequencies, rotaryDim } from './rope.js';
import type { RotationResolver } from './recipe-ops.js';
import { recipeRotations } from '../model/block-weights.js';

export type HeadMode = 'logits' | 'nll';

/** Architectures the ONNX graphs support. */
export function checkSupported(config: ModelConfig, file: string): void {
  const supported = ['llama', 'mistral', 'qwen2', 'qwen3', 'gpt2'];
  if (!supported.includes(config.architecture)) {
    throw new BwqError(`unknown architecture "${String(config.architecture)}" (supported: ${supported.join(', ')})`, { file });
  }
  if (config.rope !== undefined) inverseFrequencies(config); // rejects unsupported rope types
  if (config.architecture === 'gpt2') {
    if (config.raw['scale_attn_weights'] === false) throw new BwqError('gpt2 with scale_attn_weights=false is not supported', { file });
    if (config.raw['scale_attn_by_inverse_layer_idx'] === true) throw new BwqError('gpt2 with scale_attn_by_inverse_layer_idx=true is not supported', { file });
  }
}

/** Collects the (deduplicated) rotation tensors a layer recipe refers to. */
export { recipeRotations };

/** Rotation resolver over graph values for named tensors with known square shapes. */
export function rotationResolver(values: Map<string, { value: string; shape: readonly number[] }>, file: string): RotationResolver {
  return (rotation) => {
    const r1 = values.get(rotation.r1);
    const r2 = values.get(rotation.r2);
    if (r1 === undefined) throw new BwqError(`rotation tensor ${rotation.r1} not found`, { file });
    if (r2 === undefined) throw new BwqError(`rotation tensor ${rotation.r2} not found`, { file });
    const square = (s: readonly number[], name: string): number => {
      if (s.length !== 2 || s[0] !== s[1]) throw new BwqError(`rotation tensor ${name} must be square, has shape [${s.join(', ')}]`, { file });
      return s[0]!;
    };
    const factors = { r1: r1.value, r2: r2.value, a: square(r1.shape, rotation.r1), b: square(r2.shape, rotation.r2) };
    if (rotation.r3 === undefined) return factors;
    const r3 = values.get(rotation.r3);
    if (r3 === undefined) throw new BwqError(`rotation tensor ${rotation.r3} not found`, { file });
    return { ...factors, remainder: { r3: r3.value, r: square(r3.shape, rotation.r3) } };
  };
}

async function linearRefs(w: CheckpointWeights, names: LinearWeightNames): Promise<LinearRef> {
  return { weight: await w.float(names.weight), layout: names.transposed ? 'io' : 'oi', bias: await w.optional(names.bias) };
}

/** LayerRefs of one layer with weights as checkpoint initializers (GPT-2's fused c_attn is split). */
export async function checkpointLayerRefs(g: GraphBuilder, w: CheckpointWeights, config: ModelConfig, names: LayerWeightNames): Promise<LayerRefs> {
  const linears: Partial<Record<LinearRole, LinearRef>> = {};
  if (names.fusedQkv !== undefined) {
    const fused = await linearRefs(w, names.fusedQkv);
    const width = config.numHeads * config.headDim;
    const kvWidth = config.numKvHeads * config.headDim;
    const sizes = g.constInt64([width, kvWidth, kvWidth]);
    const axis = fused.layout === 'io' ? 1 : 0;
    const parts = g.nodeN('Split', [fused.weight, sizes], 3, { axis });
    const biases = fused.bias === undefined ? undefined : g.nodeN('Split', [fused.bias, sizes], 3, { axis: 0 });
    (['q_proj', 'k_proj', 'v_proj'] as const).forEach((role, i) => {
      linears[role] = { weight: parts[i]!, layout: fused.layout, bias: biases?.[i] };
    });
  } else {
    linears.q_proj = await linearRefs(w, names.q);
    linears.k_proj = await linearRefs(w, names.k);
    linears.v_proj = await linearRefs(w, names.v);
  }
  linears.o_proj = await linearRefs(w, names.o);
  if (names.gate !== undefined) linears.gate_proj = await linearRefs(w, names.gate);
  linears.up_proj = await linearRefs(w, names.up);
  linears.down_proj = await linearRefs(w, names.down);
  return {
    inputNorm: { weight: await w.float(names.inputNorm.weight), bias: await w.optional(names.inputNorm.bias) },
    postAttentionNorm: { weight: await w.float(names.postAttentionNorm.weight), bias: await w.optional(names.postAttentionNorm.bias) },
    linears,
    qNorm: await w.optional(names.qNorm?.weight),
    kNorm: await w.optional(names.kNorm?.weight),
  };
}

/** The full model graph. Inputs: ids [B,S] int64, mask [S,S], cos/sin [S,rd] (rope models). */
export async function buildModelGraph(model: ModelDir, mode: HeadMode, layout: ExternalDataLayout): Promise<Uint8Array> {
  const { config, checkpoint } = model;
  const dir = checkpoint.dir;
  const names = model.weightNames;
  const g = new GraphBuilder(`bwq-${config.modelType}-${mode}`);
  const w = new CheckpointWeights(g, checkpoint, layout);
  const rd = config.rope === undefined ? 0 : rotaryDim(config);
  const ids = g.input('ids', DataType.INT64, ['B', 'S']);
  const ctx = sequenceInputs(g, config, rd);
  let x = embeddings(g, ids, await w.float(names.embedTokens), await w.optional(names.embedPositions), ctx.seqDim);
  const quant = config.quantization;
  for (let i = 0; i < config.numLayers; i++) {
    const layerNames = names.layers[i];
    if (layerNames === undefined) throw new BwqError(`no weight names for layer ${i}`, { file: dir });
    const recipe = quant?.layers[i];
    const rotations = new Map<string, { value: string; shape: readonly number[] }>();
    for (const r of recipeRotations(recipe)) {
      for (const name of rotationTensorNamesOf(r)) {
        if (!checkpoint.has(name)) throw new BwqError(`rotation tensor ${name} (layer ${i}) is not in the checkpoint`, { file: dir });
        rotations.set(name, { value: await w.float(name), shape: w.shape(name) });
      }
    }
    const refs = await checkpointLayerRefs(g, w, config, layerNames);
    x = decoderLayer(g, config, x, ctx, refs, {
      recipe,
      resolveRotation: rotationResolver(rotations, dir),
      taps: new Set(),
      onTap: () => {},
      rotaryDim: rd,
    });
  }
  const finalNorm = { weight: await w.float(names.finalNorm.weight), bias: await w.optional(names.finalNorm.bias) };
  const h = norm(g, config, x, finalNorm);
  const head = await w.float(names.lmHead);
  if (mode === 'logits') g.outputAs(lmHead(g, h, head), 'logits', DataType.FLOAT, ['B', 'S', config.vocabSize]);
  else g.outputAs(nllHead(g, h, head, ids), 'nll', DataType.FLOAT, ['B', 'S1']);
  return g.encode();
}

/** Embedding graph: ids [B,S] int64 → hidden [B,S,H] (token + learned positions). */
export async function buildEmbeddingGraph(model: ModelDir, layout: ExternalDataLayout): Promise<Uint8Array> {
  const names = model.weightNames;
  const g = new GraphBuilder('bwq-embed');
  const w = new CheckpointWeights(g, model.checkpoint, layout);
  const ids = g.input('ids', DataType.INT64, ['B', 'S']);
  const seqDim = g.node('Slice', [g.node('Shape', [ids]), g.constInt64([1]), g.constInt64([2])]);
  const x = embeddings(g, ids, await w.float(names.embedTokens), await w.optional(names.embedPositions), seqDim);
  g.outputAs(x, 'hidden', DataType.FLOAT, ['B', 'S', model.config.hiddenSize]);
  return g.encode();
}

/** Head graph: hidden [B,S,H] → final norm → logits [B,S,V]. */
export async function buildHeadGraph(model: ModelDir, layout: ExternalDataLayout): Promise<Uint8Array> {
  const names = model.weightNames;
  const g = new GraphBuilder('bwq-head');
  const w = new CheckpointWeights(g, model.checkpoint, layout);
  const x = g.input('hidden', DataType.FLOAT, ['B', 'S', model.config.hiddenSize]);
  const h = norm(g, model.config, x, { weight: await w.float(names.finalNorm.weight), bias: await w.optional(names.finalNorm.bias) });
  g.outputAs(lmHead(g, h, await w.float(names.lmHead)), 'logits', DataType.FLOAT, ['B', 'S', model.config.vocabSize]);
  return g.encode();
}
