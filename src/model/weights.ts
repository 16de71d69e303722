/**
 * Hugging Face tensor names of each architecture's weights, and resolution against a checkpoint
 * (GPT-2 checkpoints exist with and without the `transformer.` prefix).
 */
import { BwqError } from '../errors.js';
import type { LinearRole } from '../quant/recipe.js';
import type { ModelConfig } from './config.js';

export interface LinearWeightNames {
  weight: string;
  bias: string | undefined;
  /** true for GPT-2 Conv1D stored [in, out]; false for nn.Linear [out, in] */
  transposed: boolean;
  /**
   * gpt2 q/k/v only: the weight is the fused c_attn [hidden, 3*hidden] (Conv1D) and this linear is
   * column block `fusedIndex` (0 = q, 1 = k, 2 = v) of width hidden; the bias likewise.
   */
  fusedIndex?: number;
}

export interface NormWeightNames {
  weight: string;
  bias: string | undefined;
}

export interface LayerWeightNames {
  inputNorm: NormWeightNames;
  postAttentionNorm: NormWeightNames;
  q: LinearWeightNames;
  k: LinearWeightNames;
  v: LinearWeightNames;
  o: LinearWeightNames;
  /** gpt2 only: fused c_attn [hidden, 3*hidden]; q/k/v then name the same tensor with `fusedIndex` */
  fusedQkv: LinearWeightNames | undefined;
  gate: LinearWeightNames | undefined;
  up: LinearWeightNames;
  down: LinearWeightNames;
  qNorm: NormWeightNames | undefined;
  kNorm: NormWeightNames | undefined;
}

export interface ModelWeightNames {
  embedTokens: string;
  embedPositions: string | undefined;
  layers: LayerWeightNames[];
  finalNorm: NormWeightNames;
  /** == embedTokens when tied */
  lmHead: string;
}

function linear(prefix: string, bias: boolean): LinearWeightNames {
  return { weight: `${prefix}.weight`, bias: bias ? `${prefix}.bias` : undefined, transposed: false };
}

function rmsNorm(prefix: string): NormWeightNames {
  return { weight: `${prefix}.weight`, bias: undefined };
}

function layerNorm(prefix: string): NormWeightNames {
  return { weight: `${prefix}.weight`, bias: `${prefix}.bias` };
}

function decoderLayer(config: ModelConfig, i: number): LayerWeightNames {
  const p = `model.layers.${i}`;
  const qkvBias = config.attentionBias;
  // Qwen2 has biases on q/k/v only; Llama/Qwen3 `attention_bias` also puts one on o_proj.
  const oBias = config.architecture === 'qwen2' ? false : config.attentionBias;
  return {
    inputNorm: rmsNorm(`${p}.input_layernorm`),
    postAttentionNorm: rmsNorm(`${p}.post_attention_layernorm`),
    q: linear(`${p}.self_attn.q_proj`, qkvBias),
    k: linear(`${p}.self_attn.k_proj`, qkvBias),
    v: linear(`${p}.self_attn.v_proj`, qkvBias),
    o: linear(`${p}.self_attn.o_proj`, oBias),
    fusedQkv: undefined,
    gate: linear(`${p}.mlp.gate_proj`, config.mlpBias),
    up: linear(`${p}.mlp.up_proj`, config.mlpBias),
    down: linear(`${p}.mlp.down_proj`, config.mlpBias),
    qNorm: config.qkNorm ? rmsNorm(`${p}.self_attn.q_norm`) : undefined,
    kNorm: config.qkNorm ? rmsNorm(`${p}.self_attn.k_norm`) : undefined,
  };
}

function conv1d(prefix: string, fusedIndex?: number): LinearWeightNames {
  const names: LinearWeightNames = { weight: `${prefix}.weight`, bias: `${prefix}.bias`, transposed: true };
  if (fusedIndex !== undefined) names.fusedIndex = fusedIndex;
  return names;
}

function gpt2Layer(prefix: string, i: number): LayerWeightNames {
  const p = `${prefix}h.${i}`;
  return {
    inputNorm: layerNorm(`${p}.ln_1`),
    postAttentionNorm: layerNorm(`${p}.ln_2`),
    q: conv1d(`${p}.attn.c_attn`, 0),
    k: conv1d(`${p}.attn.c_attn`, 1),
    v: conv1d(`${p}.attn.c_attn`, 2),
    o: conv1d(`${p}.attn.c_proj`),
    fusedQkv: conv1d(`${p}.attn.c_attn`),
    gate: undefined,
    up: conv1d(`${p}.mlp.c_fc`),
    down: conv1d(`${p}.mlp.c_proj`),
    qNorm: undefined,
    kNorm: undefined,
  };
}

function gpt2Names(config: ModelConfig, prefix: string): ModelWeightNames {
  const layers: LayerWeightNames[] = [];
  for (let i = 0; i < config.numLayers; i++) layers.push(gpt2Layer(prefix, i));
  return {
    embedTokens: `${prefix}wte.weight`,
    embedPositions: `${prefix}wpe.weight`,
    layers,
    finalNorm: layerNorm(`${prefix}ln_f`),
    lmHead: `${prefix}wte.weight`,
  };
}

/**
 * Weight names as current transformers (save_pretrained) writes them: `model.…` for the Llama
 * family, `transformer.…` for GPT-2. Use resolveWeightNames for checkpoints saved otherwise.
 */
export function modelWeightNames(config: ModelConfig): ModelWeightNames {
  if (config.architecture === 'gpt2') return gpt2Names(config, 'transformer.');
  const layers: LayerWeightNames[] = [];
  for (let i = 0; i < config.numLayers; i++) layers.push(decoderLayer(config, i));
  return {
    embedTokens: 'model.embed_tokens.weight',
    embedPositions: undefined,
    layers,
    finalNorm: rmsNorm('model.norm'),
    lmHead: config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight',
  };
}

/** Every tensor name the model needs (deduplicated, in a stable order). */
export function requiredTensorNames(names: ModelWeightNames): string[] {
  const out = new Set<string>([names.embedTokens]);
  if (names.embedPositions !== undefined) out.add(names.embedPositions);
  const addLinear = (l: LinearWeightNames | undefined): void => {
    if (l === undefined) return;
    out.add(l.weight);
    if (l.bias !== undefined) out.add(l.bias);
  };
  const addNorm = addLinear as (n: NormWeightNames | undefined) => void;
  for (const layer of names.layers) {
    addNorm(layer.inputNorm);
    addNorm(layer.postAttentionNorm);
    for (const l of [layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down]) addLinear(l);
    addNorm(layer.qNorm);
    addNorm(layer.kNorm);
  }
  addNorm(names.finalNorm);
  out.add(names.lmHead);
  return [...out];
}

/** The linear of one role in a layer (undefined for gpt2 gate_proj). */
export function linearByRole(layer: LayerWeightNames, role: LinearRole): LinearWeightNames | undefined {
  switch (role) {
    case 'q_proj': return layer.q;
    case 'k_proj': return layer.k;
    case 'v_proj': return layer.v;
    case 'o_proj': return layer.o;
    case 'gate_proj': return layer.gate;
    case 'up_proj': return layer.up;
    case 'down_proj': return layer.down;
  }
}

/** Minimal view of a checkpoint needed to resolve names. */
export interface TensorNameSource {
  has(name: string): boolean;
  names(): string[];
  /** Used to name the checkpoint in errors when no file is given (Checkpoint has both). */
  readonly indexFile?: string | undefined;
  readonly files?: readonly string[];
}

function mapNames(names: ModelWeightNames, rename: (n: string) => string): ModelWeightNames {
  const mapLinear = <T extends LinearWeightNames | NormWeightNames | undefined>(l: T): T =>
    (l === undefined ? l : { ...l, weight: rename(l.weight), bias: l.bias === undefined ? undefined : rename(l.bias) }) as T;
  return {
    embedTokens: rename(names.embedTokens),
    embedPositions: names.embedPositions === undefined ? undefined : rename(names.embedPositions),
    layers: names.layers.map((layer) => ({
      inputNorm: mapLinear(layer.inputNorm),
      postAttentionNorm: mapLinear(layer.postAttentionNorm),
      q: mapLinear(layer.q), k: mapLinear(layer.k), v: mapLinear(layer.v), o: mapLinear(layer.o),
      fusedQkv: mapLinear(layer.fusedQkv),
      gate: mapLinear(layer.gate), up: mapLinear(layer.up), down: mapLinear(layer.down),
      qNorm: mapLinear(layer.qNorm), kNorm: mapLinear(layer.kNorm),
    })),
    finalNorm: mapLinear(names.finalNorm),
    lmHead: rename(names.lmHead),
  };
}

/**
 * Weight names matched against the tensors actually present: tries the canonical prefix, then
 * none (GPT-2 hub checkpoints: `h.0.…`, `wte.weight`; bare Llama bodies: `layers.0.…`). A tied
 * model keeps lmHead = embedTokens. Throws a BwqError naming `file` (default: the checkpoint's index
 * or first file) and the first missing tensor.
 */
export function resolveWeightNames(config: ModelConfig, checkpoint: TensorNameSource, file?: string): ModelWeightNames {
  const where = file ?? checkpoint.indexFile ?? checkpoint.files?.[0] ?? 'checkpoint';
  const canonical = modelWeightNames(config);
  const strip = config.architecture === 'gpt2' ? 'transformer.' : 'model.';
  const candidates: ModelWeightNames[] = [
    canonical,
    mapNames(canonical, (n) => (n.startsWith(strip) ? n.slice(strip.length) : n)),
  ];
  // Tied embeddings stored once under the other name of the pair (transformers may save either one):
  // the one tensor serves as embedding table and LM head.
  if (config.tieWordEmbeddings && config.architecture !== 'gpt2') {
    for (const c of [...candidates]) candidates.push({ ...c, embedTokens: 'lm_head.weight', lmHead: 'lm_head.weight' });
  }
  let best: { names: ModelWeightNames; missing: string[] } | undefined;
  for (const names of candidates) {
    const missing = requiredTensorNames(names).filter((n) => !checkpoint.has(n));
    if (missing.length === 0) return names;
    if (best === undefined || missing.length < best.missing.length) best = { names, missing };
  }
  const missing = best!.missing;
  const more = missing.length > 1 ? ` (and ${missing.length - 1} more)` : '';
  throw new BwqError(`checkpoint has no tensor '${missing[0]}'${more} required by the ${config.architecture} config`, { file: where });
}

/** Minimal view of a checkpoint needed to check shapes. */
export interface TensorShapeSource {
  info(name: string): { shape: number[] };
}

/** Expected shape of every tensor the model needs (HF storage layout). */
export function expectedShapes(config: ModelConfig, names: ModelWeightNames): Map<string, number[]> {
  const h = config.hiddenSize;
  const inter = config.intermediateSize;
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKvHeads * config.headDim;
  const shapes = new Map<string, number[]>();
  const lin = (l: LinearWeightNames | undefined, out: number, inp: number): void => {
    if (l === undefined) return;
    shapes.set(l.weight, l.transposed ? [inp, out] : [out, inp]);
    if (l.bias !== undefined) shapes.set(l.bias, [out]);
  };
  const norm = (n: NormWeightNames | undefined, size: number): void => {
    if (n === undefined) return;
    shapes.set(n.weight, [size]);
    if (n.bias !== undefined) shapes.set(n.bias, [size]);
  };
  shapes.set(names.embedTokens, [config.vocabSize, h]);
  if (names.embedPositions !== undefined) shapes.set(names.embedPositions, [config.maxPositionEmbeddings, h]);
  for (const layer of names.layers) {
    norm(layer.inputNorm, h);
    norm(layer.postAttentionNorm, h);
    if (layer.fusedQkv !== undefined) {
      lin(layer.fusedQkv, 3 * h, h);
    } else {
      lin(layer.q, qDim, h);
      lin(layer.k, kvDim, h);
      lin(layer.v, kvDim, h);
    }
    lin(layer.o, h, qDim);
    lin(layer.gate, inter, h);
    lin(layer.up, inter, h);
    lin(layer.down, h, inter);
    norm(layer.qNorm, config.headDim);
    norm(layer.kNorm, config.headDim);
  }
  norm(names.finalNorm, h);
  shapes.set(names.lmHead, [config.vocabSize, h]);
  return shapes;
}

/** A tensor whose shape differs from what the config implies. */
export interface ShapeMismatch {
  name: string;
  actual: number[];
  expected: number[];
}

/** Every required tensor whose shape differs from the config's (all of them, in expectedShapes order). */
export function shapeMismatches(config: ModelConfig, names: ModelWeightNames, source: TensorShapeSource): ShapeMismatch[] {
  const out: ShapeMismatch[] = [];
  for (const [name, expected] of expectedShapes(config, names)) {
    const actual = source.info(name).shape;
    if (actual.length !== expected.length || actual.some((d, i) => d !== expected[i])) out.push({ name, actual: [...actual], expected });
  }
  return out;
}

/** "0-3,5": sorted layer indices as ranges. */
function ranges(indices: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < indices.length; ) {
    let j = i;
    while (j + 1 < indices.length && indices[j + 1] === indices[j]! + 1) j++;
    parts.push(i === j ? `${indices[i]}` : `${indices[i]}-${indices[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/**
 * One line naming every mismatch; tensors that differ only in the layer index and mismatch the same
 * way are named once with their layers, e.g. `'model.layers.{0-31}.mlp.up_proj.weight' has shape …`.
 */
export function describeShapeMismatches(mismatches: readonly ShapeMismatch[]): string {
  const shape = (s: readonly number[]): string => `[${s.join(', ')}]`;
  if (mismatches.length === 1) {
    const m = mismatches[0]!;
    return `tensor '${m.name}' has shape ${shape(m.actual)} but the config implies ${shape(m.expected)}`;
  }
  const groups = new Map<string, { before: string; after: string; layers: number[]; m: ShapeMismatch }>();
  for (const m of mismatches) {
    const match = /\.(\d+)\./.exec(m.name);
    const before = match === null ? m.name : m.name.slice(0, match.index + 1);
    const after = match === null ? '' : m.name.slice(match.index + match[0].length - 1);
    const key = `${before}\u0000${after}\u0000${shape(m.actual)}\u0000${shape(m.expected)}`;
    const g = groups.get(key) ?? { before, after, layers: [], m };
    if (match !== null) g.layers.push(Number(match[1]));
    groups.set(key, g);
  }
  const parts = [...groups.values()].map((g) => {
    const name = g.layers.length === 0 ? g.before : g.layers.length === 1 ? `${g.before}${g.layers[0]}${g.after}` : `${g.before}{${ranges([...g.layers].sort((a, b) => a - b))}}${g.after}`;
    return `'${name}' has shape ${shape(g.m.actual)} but the config implies ${shape(g.m.expected)}`;
  });
  return `${mismatches.length} tensors do not match the config: ${parts.join('; ')}`;
}

/** Checks every required tensor's shape against the config; BwqError naming `file` and every mismatch. */
export function checkWeightShapes(config: ModelConfig, names: ModelWeightNames, source: TensorShapeSource, file: string): void {
  const mismatches = shapeMismatches(config, names, source);
  if (mismatches.length > 0) throw new BwqError(describeShapeMismatches(mismatches), { file });
}
