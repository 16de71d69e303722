/**
 * Loads a model for the native forward pass: the packed quantized linears of
 * OUT_DIR/model.packed.safetensors (bwq-packed-v1, docs/FORMATS.md) and the float tensors
 * (embeddings, norms, lm_head, unquantized linears, rotations), with the recipe of
 * config.json's quantization_config attached to every linear.
 *
 * Tensors are looked up in the packed file first and then in the simulated checkpoint (the
 * rotations also live there); a linear with `<prefix>.qweight` in the packed file always runs
 * packed, never from the simulated float weight.
 */
import { BwqError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import type { LayerWeightNames, LinearWeightNames, ModelWeightNames } from '../model/weights.js';
import { linearByRole } from '../model/weights.js';
import type { ActivationQuantizer, AttentionRecipe, KroneckerRotation, LinearInputRecipe, LinearRole } from '../quant/recipe.js';
import { rotationTensorNamesOf } from '../quant/recipe.js';
import { wordsPerRow } from './reference-kernels.js';

/** A read-only tensor store (a safetensors file, a checkpoint, or an in-memory map in tests). */
export interface TensorSource {
  /** File (or description) used in error messages. */
  readonly label: string;
  has(name: string): boolean;
  shape(name: string): readonly number[];
  dtype(name: string): string;
  readFloat32(name: string): Promise<Float32Array>;
  readBytes(name: string): Promise<Uint8Array>;
}

/** Adapter for A's SafetensorsFile / Checkpoint (anything with info/has/readFloat32/readBytes). */
export function tensorSourceOf(store: {
  has(name: string): boolean;
  info(name: string): { shape: readonly number[]; dtype: string };
  readFloat32(name: string): Promise<Float32Array>;
  readBytes(name: string): Promise<Uint8Array>;
}, label: string): TensorSource {
  return {
    label,
    has: (name) => store.has(name),
    shape: (name) => store.info(name).shape,
    dtype: (name) => store.info(name).dtype,
    readFloat32: (name) => store.readFloat32(name),
    readBytes: (name) => store.readBytes(name),
  };
}

/** An in-memory tensor source (tests, or tensors built on the fly). */
export function memoryTensorSource(tensors: ReadonlyMap<string, { dtype: 'F32' | 'U32'; shape: readonly number[];
  data: Float32Array | Uint32Array }>, label = '<memory>'): TensorSource {
  const get = (name: string): { dtype: 'F32' | 'U32'; shape: readonly number[]; data: Float32Array | Uint32Array } => {
    const t = tensors.get(name);
    if (t === undefined) throw new BwqError(`no tensor named '${name}'`, { file: label });
    return t;
  };
  return {
    label,
    has: (name) => tensors.has(name),
    shape: (name) => get(name).shape,
    dtype: (name) => get(name).dtype,
    readFloat32: async (name) => {
      const t = get(name);
      return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
    },
    readBytes: async (name) => {
      const d = get(name).data;
      return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
    },
  };
}

export interface Rotation {
  /** r1 [a, a], r2 [b, b] (row-major), r3 [r, r] (kronecker_remainder; r = 0 without), a·b + r = in_features. */
  readonly r1: Float32Array;
  readonly a: number;
  readonly r2: Float32Array;
  readonly b: number;
  readonly r3: Float32Array | undefined;
  readonly r: number;
  readonly names: readonly string[];
}

/** What happens to a linear's input before its matmul (resolved recipe). */
export interface LinearInput {
  readonly rotation: Rotation | undefined;
  readonly quantizer: ActivationQuantizer;
  /** Equal keys ⇒ identical preparation, so q/k/v (and gate/up) can share it. */
  readonly key: string;
}

interface LinearCommon {
  readonly name: string;
  readonly outFeatures: number;
  readonly inFeatures: number;
  readonly bias: Float32Array | undefined;
  readonly input: LinearInput;
}

/** W ≈ diag(wscale)·B + lr_a·lr_b with B ∈ {±1}^{N×K} packed by rows. */
export interface PackedLinear extends LinearCommon {
  readonly kind: 'packed';
  readonly qweight: Uint32Array;
  readonly wscale: Float32Array;
  /** lr_a [N, r] and lr_b [r, K], or undefined (rank 0). */
  readonly lrA: Float32Array | undefined;
  readonly lrB: Float32Array | undefined;
  readonly rank: number;
}

/** An ordinary float weight [out, in]. */
export interface FloatLinear extends LinearCommon {
  readonly kind: 'float';
  readonly weight: Float32Array;
}

export type NativeLinear = PackedLinear | FloatLinear;

export interface NativeLayer {
  readonly inputNorm: Float32Array;
  readonly postAttentionNorm: Float32Array;
  readonly qNorm: Float32Array | undefined;
  readonly kNorm: Float32Array | undefined;
  readonly linears: Readonly<Record<LinearRole, NativeLinear>>;
  readonly attention: AttentionRecipe | undefined;
}

export interface NativeModel {
  readonly config: ModelConfig;
  readonly embedTokens: Float32Array;
  readonly lmHead: Float32Array;
  readonly finalNorm: Float32Array;
  readonly layers: readonly NativeLayer[];
  /** Number of linears running from packed 1-bit weights. */
  readonly packedLinears: number;
}

const ROLES: readonly LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Tensors looked up in `primary`, then in `fallback`. */
class TensorLookup {
  constructor(readonly primary: TensorSource, readonly fallback: TensorSource | undefined) {}

  source(name: string): TensorSource | undefined {
    if (this.primary.has(name)) return this.primary;
    if (this.fallback?.has(name)) return this.fallback;
    return undefined;
  }

  has(name: string): boolean {
    return this.source(name) !== undefined;
  }

  where(name: string): string {
    return this.source(name)?.label ?? this.primary.label;
  }

  async float(name: string, shape: readonly number[]): Promise<Float32Array> {
    const src = this.source(name);
    if (src === undefined) {
      const files = this.fallback === undefined ? this.primary.label : `${this.primary.label} or ${this.fallback.label}`;
      throw new BwqError(`tensor '${name}' is missing (looked in ${files})`, { file: this.primary.label });
    }
    const actual = src.shape(name);
    if (!sameShape(actual, shape)) {
      throw new BwqError(`tensor '${name}' has shape [${actual.join(', ')}], expected [${shape.join(', ')}]`,
        { file: src.label });
    }
    const data = await src.readFloat32(name);
    // Own copy: the reader may return a view into a shared buffer.
    return Float32Array.from(data);
  }

  async uint32(name: string, shape: readonly number[]): Promise<Uint32Array> {
    const src = this.source(name);
    if (src === undefined) throw new BwqError(`tensor '${name}' is missing`, { file: this.primary.label });
    const dtype = src.dtype(name);
    if (dtype !== 'U32' && dtype !== 'I32') {
      throw new BwqError(`tensor '${name}' has dtype ${dtype}, expected U32 (packed sign bits)`, { file: src.label });
    }
    const actual = src.shape(name);
    if (!sameShape(actual, shape)) {
      throw new BwqError(`tensor '${name}' has shape [${actual.join(', ')}], expected [${shape.join(', ')}]`,
        { file: src.label });
    }
    const bytes = await src.readBytes(name);
    const out = new Uint32Array(bytes.byteLength / 4);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
}

function linearShape(config: ModelConfig, role: LinearRole): [number, number] {
  const h = config.hiddenSize;
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKvHeads * config.headDim;
  switch (role) {
    case 'q_proj': return [qDim, h];
    case 'k_proj': return [kvDim, h];
    case 'v_proj': return [kvDim, h];
    case 'o_proj': return [h, qDim];
    case 'gate_proj': return [config.intermediateSize, h];
    case 'up_proj': return [config.intermediateSize, h];
    case 'down_proj': return [h, config.intermediateSize];
  }
}

async function loadRotation(lookup: TensorLookup, names: KroneckerRotation, inFeatures: number,
  cache: Map<string, Promise<Rotation>>): Promise<Rotation> {
  const all = rotationTensorNamesOf(names);
  const key = all.join('\u0000');
  let pending = cache.get(key);
  if (pending === undefined) {
    pending = (async () => {
      const shapeOf = (name: string): readonly number[] => {
        const src = lookup.source(name);
        if (src === undefined) {
          throw new BwqError(`rotation tensor '${name}' named in quantization_config is missing`, { file: lookup.primary.label });
        }
        const shape = src.shape(name);
        if (shape.length !== 2 || shape[0] !== shape[1]) {
          throw new BwqError(`rotation tensor '${name}' must be square, has shape [${shape.join(', ')}]`, { file: src.label });
        }
        return shape;
      };
      const a = shapeOf(names.r1)[0]!;
      const b = shapeOf(names.r2)[0]!;
      const r = names.r3 === undefined ? 0 : shapeOf(names.r3)[0]!;
      if (a * b + r !== inFeatures) {
        const what = names.r3 === undefined ? `${names.r1} ⊗ ${names.r2} is ${a}x${b} = ${a * b}` : `diag(${names.r1} ⊗ ${names.r2}, ${names.r3}) is ${a}x${b} + ${r} = ${a * b + r}`;
        throw new BwqError(`rotation ${what}, but the linear has ${inFeatures} inputs`, { file: lookup.where(names.r1) });
      }
      return { r1: await lookup.float(names.r1, [a, a]), a, r2: await lookup.float(names.r2, [b, b]), b,
        r3: names.r3 === undefined ? undefined : await lookup.float(names.r3, [r, r]), r, names: all };
    })();
    cache.set(key, pending);
  }
  return pending;
}

async function loadLinear(lookup: TensorLookup, names: LinearWeightNames, role: LinearRole, config: ModelConfig,
  recipe: LinearInputRecipe | undefined, rotations: Map<string, Promise<Rotation>>): Promise<NativeLinear> {
  const [n, k] = linearShape(config, role);
  if (names.transposed || names.fusedIndex !== undefined) {
    throw new BwqError(`${names.weight}: Conv1D (GPT-2) linears are not supported by the native backend`,
      { file: lookup.primary.label });
  }
  const prefix = names.weight.replace(/\.weight$/, '');
  const rotation = recipe?.rotation === undefined ? undefined : await loadRotation(lookup, recipe.rotation, k, rotations);
  const quantizer: ActivationQuantizer = recipe?.quantizer ?? { kind: 'none' };
  const input: LinearInput = {
    rotation, quantizer,
    key: JSON.stringify([rotation?.names ?? null, quantizer]),
  };
  const biasName = lookup.has(`${prefix}.bias`) ? `${prefix}.bias` : names.bias;
  const bias = biasName === undefined ? undefined : await lookup.float(biasName, [n]);
  const qweightName = `${prefix}.qweight`;
  if (lookup.primary.has(qweightName)) {
    const qweight = await lookup.uint32(qweightName, [n, wordsPerRow(k)]);
    const wscale = await lookup.float(`${prefix}.wscale`, [n]);
    let lrA: Float32Array | undefined;
    let lrB: Float32Array | undefined;
    let rank = 0;
    const aName = `${prefix}.lr_a`;
    const bName = `${prefix}.lr_b`;
    if (lookup.primary.has(aName) !== lookup.primary.has(bName)) {
      throw new BwqError(`${prefix}: lr_a and lr_b must both be present or both absent`, { file: lookup.primary.label });
    }
    if (lookup.primary.has(aName)) {
      const aShape = lookup.primary.shape(aName);
      rank = aShape[1] ?? -1;
      if (aShape.length !== 2 || rank < 0) {
        throw new BwqError(`tensor '${aName}' must be [${n}, r], has [${aShape.join(', ')}]`, { file: lookup.primary.label });
      }
      lrA = await lookup.float(aName, [n, rank]);
      lrB = await lookup.float(bName, [rank, k]);
      if (rank === 0) {
        lrA = undefined;
        lrB = undefined;
      }
    }
    return { kind: 'packed', name: prefix, outFeatures: n, inFeatures: k, bias, input, qweight, wscale, lrA, lrB, rank };
  }
  const weight = await lookup.float(names.weight, [n, k]);
  return { kind: 'float', name: prefix, outFeatures: n, inFeatures: k, bias, input, weight };
}

async function loadNorm(lookup: TensorLookup, name: string, size: number): Promise<Float32Array> {
  return lookup.float(name, [size]);
}

/**
 * Loads every tensor of the model. `packed` is the packed-weights file (or undefined for a float
 * model), `checkpoint` the model directory's safetensors.
 */
export async function loadNativeModel(config: ModelConfig, names: ModelWeightNames, packed: TensorSource | undefined,
  checkpoint: TensorSource): Promise<NativeModel> {
  if (config.architecture === 'gpt2' || config.normKind !== 'rms') {
    throw new BwqError(`architecture ${config.architecture} is not supported by the native backend (llama, mistral, qwen2, qwen3)`,
      { file: checkpoint.label });
  }
  const lookup = packed === undefined ? new TensorLookup(checkpoint, undefined) : new TensorLookup(packed, checkpoint);
  const recipe = config.quantization;
  if (recipe !== undefined && recipe.layers.length !== config.numLayers) {
    throw new BwqError(`quantization_config has ${recipe.layers.length} layers, the model ${config.numLayers}`,
      { file: checkpoint.label });
  }
  const h = config.hiddenSize;
  const rotations = new Map<string, Promise<Rotation>>();
  const layers: NativeLayer[] = [];
  let packedLinears = 0;
  for (let i = 0; i < config.numLayers; i++) {
    const ln = names.layers[i]!;
    const layerRecipe = recipe?.layers[i];
    const linears = {} as Record<LinearRole, NativeLinear>;
    for (const role of ROLES) {
      const ln2 = linearByRole(ln, role);
      if (ln2 === undefined) throw new BwqError(`layer ${i} has no ${role}`, { file: checkpoint.label });
      const lin = await loadLinear(lookup, ln2, role, config, layerRecipe?.linears[role], rotations);
      if (lin.kind === 'packed') packedLinears++;
      linears[role] = lin;
    }
    layers.push({
      inputNorm: await loadNorm(lookup, ln.inputNorm.weight, h),
      postAttentionNorm: await loadNorm(lookup, ln.postAttentionNorm.weight, h),
      qNorm: ln.qNorm === undefined ? undefined : await loadNorm(lookup, ln.qNorm.weight, config.headDim),
      kNorm: ln.kNorm === undefined ? undefined : await loadNorm(lookup, ln.kNorm.weight, config.headDim),
      linears,
      attention: layerRecipe?.attention,
    });
  }
  if (recipe !== undefined && packed !== undefined && packedLinears === 0) {
    throw new BwqError('the packed-weights file holds no packed linear (<prefix>.qweight)', { file: packed.label });
  }
  const embedTokens = await lookup.float(names.embedTokens, [config.vocabSize, h]);
  const lmHead = names.lmHead === names.embedTokens ? embedTokens : await lookup.float(names.lmHead, [config.vocabSize, h]);
  const finalNorm = await loadNorm(lookup, names.finalNorm.weight, h);
  return { config, embedTokens, lmHead, finalNorm, layers, packedLinears };
}
