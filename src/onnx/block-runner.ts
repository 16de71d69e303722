/**
 * One decoder block at a time (for calibration): the block graph takes its weights as graph
 * *inputs* (nn.Linear layout [out, in]), so one ORT session serves every layer with the same
 * recipe structure and caller-supplied weights (e.g. rotated/binarized candidates) cost no
 * session rebuild. Memory is bounded by one block's weights plus activations.
 *
 * Graph inputs: hidden [B,S,H], mask [S,S], cos/sin [S,rd] (rope models), `w.<role>` [out,in],
 * `b.<role>` [out] (present biases only), `n.in.w`/`n.in.b`, `n.post.w`/`n.post.b`, `n.q`/`n.k`
 * (qk-norm), `r.<k>` (k-th rotation tensor named by the recipe). Outputs: `output` [B,S,H] and
 * `tap.<name>` for each requested tap.
 */
import type { ModelDir } from '../model/model-dir.js';
import type { ModelConfig } from '../model/config.js';
import { linearByRole } from '../model/weights.js';
import { loadBlockWeights as readBlockWeights, recipeRotations, type BlockWeights } from '../model/block-weights.js';
import type { LayerRecipe, LinearRole } from '../quant/recipe.js';
import { rotationTensorNamesOf } from '../quant/recipe.js';
import type { Tensor } from '../tensor.js';
import { BwqError } from '../errors.js';
import { DataType } from './onnx-proto.js';
import { GraphBuilder } from './graph-builder.js';
import { decoderLayer, LINEAR_ROLES, sequenceInputs, TAP_NAMES, type LayerRefs, type LinearRef, type TapName } from './decoder-graph.js';
import { buildEmbeddingGraph, buildHeadGraph, checkSupported, rotationResolver } from './model-graph.js';
import { rotaryDim } from './rope.js';
import { externalDataLayout } from './checkpoint-weights.js';
import { SequenceFeeds } from './model-runner.js';
import { createSession, floatTensor, int64Tensor, outputData, type ort } from './session.js';

export type { TapName } from './decoder-graph.js';

export type { BlockWeights } from '../model/block-weights.js';

export interface BlockRunOptions {
  weights?: BlockWeights;
  /** undefined: the model's own recipe (config.quantization.layers[layer]); pass { linears: {} } for float */
  recipe?: LayerRecipe;
  taps?: readonly TapName[];
}

export interface BlockRunner {
  loadBlockWeights(layer: number): Promise<BlockWeights>;
  /** hidden: [batch, seq, hidden] → block output [batch, seq, hidden] */
  run(layer: number, hidden: Float32Array, batch: number, seq: number, options?: BlockRunOptions): Promise<{ output: Float32Array; taps: Map<TapName, Float32Array> }>;
  /** token embeddings (+ positions for gpt2) [batch, seq, hidden] */
  embed(ids: Int32Array, batch: number, seq: number): Promise<Float32Array>;
  /** final norm + LM head: hidden [batch, seq, hidden] → logits [batch, seq, vocab] */
  logits(hidden: Float32Array, batch: number, seq: number): Promise<Float32Array>;
  close(): Promise<void>;
}

/** Expected [out, in] of each linear role. */
export function linearShape(config: ModelConfig, role: LinearRole): [number, number] {
  const h = config.hiddenSize;
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  const i = config.intermediateSize;
  switch (role) {
    case 'q_proj': return [q, h];
    case 'k_proj':
    case 'v_proj': return [kv, h];
    case 'o_proj': return [h, q];
    case 'gate_proj':
    case 'up_proj': return [i, h];
    case 'down_proj': return [h, i];
  }
}

interface BlockStructure {
  key: string;
  rotationNames: string[];
}

function blockStructure(config: ModelConfig, weights: BlockWeights, recipe: LayerRecipe | undefined, taps: readonly TapName[], shapeOf: (name: string) => readonly number[]): BlockStructure {
  const rotationNames: string[] = [];
  for (const r of recipeRotations(recipe)) {
    for (const n of rotationTensorNamesOf(r)) if (!rotationNames.includes(n)) rotationNames.push(n);
  }
  const rename = (n: string): string => `r.${rotationNames.indexOf(n)}`;
  const normalized = recipe === undefined ? undefined : {
    linears: Object.fromEntries(
      Object.entries(recipe.linears).map(([role, r]) => [role, r === undefined ? undefined : {
        quantizer: r.quantizer,
        rotation: r.rotation === undefined ? undefined : {
          kind: r.rotation.kind, r1: rename(r.rotation.r1), r2: rename(r.rotation.r2),
          ...(r.rotation.r3 === undefined ? {} : { r3: rename(r.rotation.r3) }),
        },
      }]),
    ),
    attention: recipe.attention,
  };
  const key = JSON.stringify({
    recipe: normalized,
    rotationShapes: rotationNames.map((n) => shapeOf(n)),
    linears: LINEAR_ROLES.filter((r) => weights.linears[r] !== undefined),
    biases: LINEAR_ROLES.filter((r) => weights.biases[r] !== undefined),
    normBias: [weights.inputNorm.bias !== undefined, weights.postAttentionNorm.bias !== undefined],
    qk: [weights.qNorm !== undefined, weights.kNorm !== undefined],
    taps: [...taps].sort(),
    arch: config.architecture,
  });
  return { key, rotationNames };
}

function buildBlockGraph(config: ModelConfig, weights: BlockWeights, recipe: LayerRecipe | undefined, taps: readonly TapName[], structure: BlockStructure, shapeOf: (name: string) => readonly number[]): Uint8Array {
  const g = new GraphBuilder(`bwq-block-${config.modelType}`);
  const rd = config.rope === undefined ? 0 : rotaryDim(config);
  const x = g.input('hidden', DataType.FLOAT, ['B', 'S', config.hiddenSize]);
  const ctx = sequenceInputs(g, config, rd);
  const linears: Partial<Record<LinearRole, LinearRef>> = {};
  for (const role of LINEAR_ROLES) {
    if (weights.linears[role] === undefined) continue;
    const [o, i] = linearShape(config, role);
    const weight = g.input(`w.${role}`, DataType.FLOAT, [o, i]);
    const bias = weights.biases[role] === undefined ? undefined : g.input(`b.${role}`, DataType.FLOAT, [o]);
    linears[role] = { weight, layout: 'oi', bias };
  }
  const h = config.hiddenSize;
  const normIn = (prefix: string, hasBias: boolean): { weight: string; bias: string | undefined } => ({
    weight: g.input(`${prefix}.w`, DataType.FLOAT, [h]),
    bias: hasBias ? g.input(`${prefix}.b`, DataType.FLOAT, [h]) : undefined,
  });
  const refs: LayerRefs = {
    inputNorm: normIn('n.in', weights.inputNorm.bias !== undefined),
    postAttentionNorm: normIn('n.post', weights.postAttentionNorm.bias !== undefined),
    linears,
    qNorm: weights.qNorm === undefined ? undefined : g.input('n.q', DataType.FLOAT, [config.headDim]),
    kNorm: weights.kNorm === undefined ? undefined : g.input('n.k', DataType.FLOAT, [config.headDim]),
  };
  const rotations = new Map<string, { value: string; shape: readonly number[] }>();
  structure.rotationNames.forEach((name, k) => {
    const shape = shapeOf(name);
    rotations.set(name, { value: g.input(`r.${k}`, DataType.FLOAT, shape), shape });
  });
  const tapSet = new Set(taps);
  const out = decoderLayer(g, config, x, ctx, refs, {
    recipe,
    resolveRotation: rotationResolver(rotations, 'block recipe'),
    taps: tapSet,
    onTap: (tap, value) => g.outputAs(value, `tap.${tap}`, DataType.FLOAT, undefined),
    rotaryDim: rd,
  });
  g.outputAs(out, 'output', DataType.FLOAT, ['B', 'S', h]);
  return g.encode();
}

export async function createBlockRunner(model: ModelDir, options: { threads?: number } = {}): Promise<BlockRunner> {
  const { config, checkpoint } = model;
  checkSupported(config, model.dir);
  const threads = options.threads;
  const feeds = new SequenceFeeds(config);
  const layout = await externalDataLayout(checkpoint.files);
  const blockSessions = new Map<string, Promise<ort.InferenceSession>>();
  let embedSession: Promise<ort.InferenceSession> | undefined;
  let headSession: Promise<ort.InferenceSession> | undefined;
  let cached: { layer: number; weights: BlockWeights } | undefined;

  const loadBlockWeights = (layer: number): Promise<BlockWeights> => readBlockWeights(model, layer);

  const weightsFor = async (layer: number): Promise<BlockWeights> => {
    if (cached?.layer !== layer) cached = { layer, weights: await loadBlockWeights(layer) };
    return cached.weights;
  };

  const run: BlockRunner['run'] = async (layer, hidden, batch, seq, runOptions = {}) => {
    if (layer < 0 || layer >= config.numLayers) throw new BwqError(`layer ${layer} out of range (model has ${config.numLayers})`, { file: model.dir });
    const h = config.hiddenSize;
    if (hidden.length !== batch * seq * h) throw new Error(`hidden has ${hidden.length} values, expected ${batch}x${seq}x${h}`);
    if (seq > config.maxPositionEmbeddings) throw new BwqError(`sequence length ${seq} exceeds max_position_embeddings ${config.maxPositionEmbeddings}`);
    const weights = runOptions.weights ?? (await weightsFor(layer));
    const recipe = runOptions.recipe ?? config.quantization?.layers[layer];
    const taps = [...new Set(runOptions.taps ?? [])];
    for (const t of taps) if (!TAP_NAMES.includes(t)) throw new Error(`unknown tap ${t}`);
    const extra = async (name: string): Promise<Tensor> => {
      const t = weights.extra.get(name);
      if (t !== undefined) return t;
      if (checkpoint.has(name)) {
        const read = await checkpoint.readTensor(name);
        weights.extra.set(name, read);
        return read;
      }
      throw new BwqError(`rotation tensor ${name} is neither in BlockWeights.extra nor in the checkpoint`, { file: model.dir });
    };
    const rotationTensors = new Map<string, Tensor>();
    for (const r of recipeRotations(recipe)) {
      for (const n of rotationTensorNamesOf(r)) rotationTensors.set(n, await extra(n));
    }
    const shapeOf = (name: string): readonly number[] => rotationTensors.get(name)!.shape;
    const structure = blockStructure(config, weights, recipe, taps, shapeOf);
    let session = blockSessions.get(structure.key);
    if (session === undefined) {
      session = createSession(buildBlockGraph(config, weights, recipe, taps, structure, shapeOf), { threads });
      blockSessions.set(structure.key, session);
    }
    const inputs: Record<string, ort.Tensor> = { hidden: floatTensor(hidden, [batch, seq, h]), ...feeds.get(seq) };
    for (const role of LINEAR_ROLES) {
      const w = weights.linears[role];
      if (w === undefined) continue;
      const [o, i] = linearShape(config, role);
      if (w.length !== o * i) throw new Error(`weight ${role} has ${w.length} values, expected ${o}x${i}`);
      inputs[`w.${role}`] = floatTensor(w, [o, i]);
      const b = weights.biases[role];
      if (b !== undefined) inputs[`b.${role}`] = floatTensor(b, [o]);
    }
    inputs['n.in.w'] = floatTensor(weights.inputNorm.weight, [h]);
    if (weights.inputNorm.bias !== undefined) inputs['n.in.b'] = floatTensor(weights.inputNorm.bias, [h]);
    inputs['n.post.w'] = floatTensor(weights.postAttentionNorm.weight, [h]);
    if (weights.postAttentionNorm.bias !== undefined) inputs['n.post.b'] = floatTensor(weights.postAttentionNorm.bias, [h]);
    if (weights.qNorm !== undefined) inputs['n.q'] = floatTensor(weights.qNorm, [config.headDim]);
    if (weights.kNorm !== undefined) inputs['n.k'] = floatTensor(weights.kNorm, [config.headDim]);
    structure.rotationNames.forEach((name, k) => {
      const t = rotationTensors.get(name)!;
      inputs[`r.${k}`] = floatTensor(t.data, t.shape);
    });
    const out = await (await session).run(inputs);
    const tapValues = new Map<TapName, Float32Array>();
    for (const t of taps) tapValues.set(t, outputData(out, `tap.${t}`));
    return { output: outputData(out, 'output'), taps: tapValues };
  };

  return {
    loadBlockWeights,
    run,
    async embed(ids, batch, seq) {
      if (ids.length !== batch * seq) throw new Error(`ids has ${ids.length} entries, expected ${batch}x${seq}`);
      embedSession ??= buildEmbeddingGraph(model, layout).then((bytes) => createSession(bytes, { threads, externalDataDir: layout.root }));
      const out = await (await embedSession).run({ ids: int64Tensor(ids, [batch, seq]) });
      return outputData(out, 'hidden');
    },
    async logits(hidden, batch, seq) {
      headSession ??= buildHeadGraph(model, layout).then((bytes) => createSession(bytes, { threads, externalDataDir: layout.root }));
      const out = await (await headSession).run({ hidden: floatTensor(hidden, [batch, seq, config.hiddenSize]) });
      return outputData(out, 'logits');
    },
    async close() {
      for (const s of blockSessions.values()) await (await s).release();
      blockSessions.clear();
      if (embedSession !== undefined) await (await embedSession).release();
      if (headSession !== undefined) await (await headSession).release();
      embedSession = undefined;
      headSession = undefined;
      cached = undefined;
    },
  };
}
