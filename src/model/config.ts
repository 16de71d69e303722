/**
 * Hugging Face config.json → ModelConfig for the supported decoder-only architectures.
 * Every problem is a one-line BwqError naming the config file.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BwqError } from '../errors.js';
import type { QuantizationConfig } from '../quant/recipe.js';
import { parseQuantizationConfig } from './quantization-config.js';

export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gpt2';

export const SUPPORTED_ARCHITECTURES: readonly Architecture[] = ['llama', 'mistral', 'qwen2', 'qwen3', 'gpt2'];

export interface RopeConfig {
  theta: number;
  type: 'default' | 'linear' | 'llama3' | 'dynamic' | 'yarn';
  factor?: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
  partialRotaryFactor?: number;
}

export type HiddenAct = 'silu' | 'gelu_new' | 'gelu' | 'gelu_pytorch_tanh' | 'relu';

export interface ModelConfig {
  architecture: Architecture;
  modelType: string;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  normEps: number;
  normKind: 'rms' | 'layer';
  hiddenAct: HiddenAct;
  /** undefined for gpt2 (learned positions) */
  rope: RopeConfig | undefined;
  tieWordEmbeddings: boolean;
  attentionBias: boolean;
  mlpBias: boolean;
  qkNorm: boolean;
  /** mistral/qwen2 sliding window if enabled (eval uses causal if seq <= window) */
  slidingWindow: number | undefined;
  /** from src/quant/recipe.ts, validated */
  quantization: QuantizationConfig | undefined;
  raw: Record<string, unknown>;
}

const ARCHITECTURE_CLASSES: Readonly<Record<string, Architecture>> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
  GPT2LMHeadModel: 'gpt2',
};

const HIDDEN_ACTS: readonly HiddenAct[] = ['silu', 'gelu_new', 'gelu', 'gelu_pytorch_tanh', 'relu'];
const ROPE_TYPES: readonly RopeConfig['type'][] = ['default', 'linear', 'llama3', 'dynamic', 'yarn'];

/** Field readers bound to one config file (so every message names it). */
class Fields {
  constructor(readonly raw: Record<string, unknown>, readonly file: string, readonly prefix = '') {}

  fail(problem: string): never {
    throw new BwqError(problem, { file: this.file });
  }

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  private show(key: string): string {
    return `${this.prefix}${key}`;
  }

  positiveInt(key: string, fallback?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.fail(`config field '${this.show(key)}' is missing`);
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      this.fail(`config field '${this.show(key)}' must be a positive integer (got ${JSON.stringify(v)})`);
    }
    return v;
  }

  positiveNumber(key: string, fallback?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.fail(`config field '${this.show(key)}' is missing`);
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      this.fail(`config field '${this.show(key)}' must be a positive number (got ${JSON.stringify(v)})`);
    }
    return v;
  }

  optionalPositiveNumber(key: string): number | undefined {
    return this.has(key) ? this.positiveNumber(key) : undefined;
  }

  optionalPositiveInt(key: string): number | undefined {
    return this.has(key) ? this.positiveInt(key) : undefined;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') this.fail(`config field '${this.show(key)}' must be true or false (got ${JSON.stringify(v)})`);
    return v;
  }

  string(key: string, fallback?: string): string {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      this.fail(`config field '${this.show(key)}' is missing`);
    }
    if (typeof v !== 'string') this.fail(`config field '${this.show(key)}' must be a string (got ${JSON.stringify(v)})`);
    return v;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Picks the architecture from `model_type`, falling back to `architectures[0]`. */
export function detectArchitecture(raw: Record<string, unknown>, file: string): Architecture {
  const modelType = raw['model_type'];
  if (typeof modelType === 'string' && (SUPPORTED_ARCHITECTURES as readonly string[]).includes(modelType)) {
    return modelType as Architecture;
  }
  const archs = raw['architectures'];
  const first = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : undefined;
  if (typeof modelType !== 'string' && first !== undefined && ARCHITECTURE_CLASSES[first] !== undefined) {
    return ARCHITECTURE_CLASSES[first]!;
  }
  const name = typeof modelType === 'string' ? modelType : first;
  if (name === undefined) {
    throw new BwqError(`config has neither 'model_type' nor 'architectures' (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`, { file });
  }
  throw new BwqError(`unsupported architecture '${name}' (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`, { file });
}

function parseHiddenAct(f: Fields, key: string, fallback: HiddenAct): HiddenAct {
  let act = f.string(key, fallback);
  if (act === 'swish') act = 'silu';
  if (!(HIDDEN_ACTS as readonly string[]).includes(act)) {
    f.fail(`unsupported activation '${act}' in '${key}' (supported: ${HIDDEN_ACTS.join(', ')})`);
  }
  return act as HiddenAct;
}

/**
 * RoPE settings: transformers ≥ 5 writes `rope_parameters` {rope_theta, rope_type, factor, …};
 * older configs write `rope_theta` plus an optional `rope_scaling` {type|rope_type, factor, …}.
 */
function parseRope(f: Fields): RopeConfig {
  const params = f.raw['rope_parameters'];
  const scaling = f.raw['rope_scaling'];
  let source: Fields;
  let theta: number;
  if (isObject(params)) {
    source = new Fields(params, f.file, 'rope_parameters.');
    theta = source.has('rope_theta') ? source.positiveNumber('rope_theta') : f.positiveNumber('rope_theta', 10000);
  } else {
    if (params !== undefined && params !== null) f.fail(`config field 'rope_parameters' must be an object`);
    theta = f.positiveNumber('rope_theta', 10000);
    if (scaling !== undefined && scaling !== null && !isObject(scaling)) f.fail(`config field 'rope_scaling' must be an object or null`);
    source = new Fields(isObject(scaling) ? scaling : {}, f.file, 'rope_scaling.');
  }
  const typeName = source.has('rope_type') ? source.string('rope_type') : source.string('type', 'default');
  if (!(ROPE_TYPES as readonly string[]).includes(typeName)) {
    f.fail(`unsupported rope type '${typeName}' (supported: ${ROPE_TYPES.join(', ')})`);
  }
  const rope: RopeConfig = { theta, type: typeName as RopeConfig['type'] };
  if (rope.type !== 'default') rope.factor = source.positiveNumber('factor');
  if (rope.type === 'llama3') {
    rope.lowFreqFactor = source.positiveNumber('low_freq_factor');
    rope.highFreqFactor = source.positiveNumber('high_freq_factor');
    rope.originalMaxPositionEmbeddings = source.positiveInt('original_max_position_embeddings');
  } else if (source.has('original_max_position_embeddings')) {
    rope.originalMaxPositionEmbeddings = source.positiveInt('original_max_position_embeddings');
  }
  const partial = source.optionalPositiveNumber('partial_rotary_factor') ?? f.optionalPositiveNumber('partial_rotary_factor');
  if (partial !== undefined && partial !== 1) {
    if (partial > 1) f.fail(`config field 'partial_rotary_factor' must be at most 1 (got ${partial})`);
    rope.partialRotaryFactor = partial;
  }
  return rope;
}

function parseDecoder(arch: Exclude<Architecture, 'gpt2'>, f: Fields): Omit<ModelConfig, 'quantization' | 'raw' | 'modelType'> {
  const hiddenSize = f.positiveInt('hidden_size');
  const numHeads = f.positiveInt('num_attention_heads');
  const numKvHeads = f.positiveInt('num_key_value_heads', numHeads);
  if (!f.has('head_dim') && hiddenSize % numHeads !== 0) {
    f.fail(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} (and no head_dim is given)`);
  }
  const headDim = f.positiveInt('head_dim', hiddenSize / numHeads);
  if (numHeads % numKvHeads !== 0) {
    f.fail(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  let slidingWindow: number | undefined;
  if (arch === 'mistral') {
    // MistralConfig defaults to a 4096-token window when the key is absent; null disables it.
    slidingWindow = f.raw['sliding_window'] === undefined ? 4096 : f.optionalPositiveInt('sliding_window');
  } else if ((arch === 'qwen2' || arch === 'qwen3') && f.bool('use_sliding_window', false)) {
    slidingWindow = f.optionalPositiveInt('sliding_window');
  }
  const attentionBias = arch === 'qwen2' ? true : arch === 'mistral' ? false : f.bool('attention_bias', false);
  const rope = parseRope(f);
  if (rope.partialRotaryFactor !== undefined && (Math.round(headDim * rope.partialRotaryFactor) % 2 !== 0)) {
    f.fail(`partial_rotary_factor ${rope.partialRotaryFactor} gives an odd rotary dimension for head_dim ${headDim}`);
  }
  return {
    architecture: arch,
    hiddenSize,
    intermediateSize: f.positiveInt('intermediate_size'),
    numLayers: f.positiveInt('num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: f.positiveInt('vocab_size'),
    maxPositionEmbeddings: f.positiveInt('max_position_embeddings', 2048),
    normEps: f.positiveNumber('rms_norm_eps', 1e-6),
    normKind: 'rms',
    hiddenAct: parseHiddenAct(f, 'hidden_act', 'silu'),
    rope,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    attentionBias,
    mlpBias: arch === 'llama' ? f.bool('mlp_bias', false) : false,
    qkNorm: arch === 'qwen3',
    slidingWindow,
  };
}

function parseGpt2(f: Fields): Omit<ModelConfig, 'quantization' | 'raw' | 'modelType'> {
  const hiddenSize = f.positiveInt('n_embd');
  const numHeads = f.positiveInt('n_head');
  if (hiddenSize % numHeads !== 0) f.fail(`n_embd ${hiddenSize} is not divisible by n_head ${numHeads}`);
  if (f.bool('scale_attn_by_inverse_layer_idx', false)) f.fail(`'scale_attn_by_inverse_layer_idx: true' is not supported`);
  if (!f.bool('scale_attn_weights', true)) f.fail(`'scale_attn_weights: false' is not supported`);
  if (f.bool('add_cross_attention', false)) f.fail(`'add_cross_attention: true' is not supported`);
  return {
    architecture: 'gpt2',
    hiddenSize,
    intermediateSize: f.positiveInt('n_inner', 4 * hiddenSize),
    numLayers: f.positiveInt('n_layer'),
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    vocabSize: f.positiveInt('vocab_size'),
    maxPositionEmbeddings: f.positiveInt('n_positions'),
    normEps: f.positiveNumber('layer_norm_epsilon', 1e-5),
    normKind: 'layer',
    hiddenAct: parseHiddenAct(f, 'activation_function', 'gelu_new'),
    rope: undefined,
    tieWordEmbeddings: true,
    attentionBias: true,
    mlpBias: true,
    qkNorm: false,
    slidingWindow: undefined,
  };
}

/** Parses and validates a config.json object; BwqError naming `file` on any problem. */
export function parseModelConfig(json: unknown, file: string): ModelConfig {
  if (!isObject(json)) throw new BwqError('config is not a JSON object', { file });
  const raw = json;
  const architecture = detectArchitecture(raw, file);
  const f = new Fields(raw, file);
  const base = architecture === 'gpt2' ? parseGpt2(f) : parseDecoder(architecture, f);
  const modelType = typeof raw['model_type'] === 'string' ? raw['model_type'] : architecture;
  let quantization: QuantizationConfig | undefined;
  const q = raw['quantization_config'];
  if (q !== undefined && q !== null) {
    quantization = parseQuantizationConfig(q, { numLayers: base.numLayers, architecture, file });
  }
  return { ...base, modelType, quantization, raw };
}

/** Reads DIR/config.json. */
export async function loadModelConfig(dir: string): Promise<ModelConfig> {
  const file = join(dir, 'config.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new BwqError(code === 'ENOENT' ? 'config.json not found' : `cannot read config: ${(error as Error).message}`,
      { file, cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new BwqError(`config is not valid JSON (${(error as Error).message.split('\n')[0]})`, { file });
  }
  return parseModelConfig(json, file);
}
