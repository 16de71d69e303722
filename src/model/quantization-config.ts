/**
 * Validation of `quantization_config` (quant_method "bwq") in config.json against the recipe
 * contract of src/quant/recipe.ts. Returns the typed object (a fresh copy with only known fields).
 */
import { BwqError } from '../errors.js';
import type {
  ActivationQuantizer, AttentionRecipe, KroneckerRotation, LayerRecipe, LinearInputRecipe, LinearRole,
  ProbsRow, QuantizationConfig,
} from '../quant/recipe.js';
import { rotationTensorNamesOf, SIMULATED_ONLY_METHODS } from '../quant/recipe.js';

export const LINEAR_ROLES: readonly LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const METHODS: readonly QuantizationConfig['method'][] = ['bwta', 'bwla', 'rtn', 'billm', 'arb'];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface QuantizationContext {
  numLayers: number;
  architecture: string;
  file: string;
}

/** Parses one activation quantizer object at `path` (for messages). */
export function parseActivationQuantizer(v: unknown, path: string, file: string): ActivationQuantizer {
  const fail = (problem: string): never => {
    throw new BwqError(`${path}: ${problem}`, { file });
  };
  if (!isObject(v)) return fail('quantizer must be an object');
  switch (v['kind']) {
    case 'none':
      return { kind: 'none' };
    case 'binary':
      return { kind: 'binary' };
    case 'int': {
      const bits = v['bits'];
      if (typeof bits !== 'number' || !Number.isInteger(bits) || bits < 2 || bits > 32) {
        fail(`int quantizer 'bits' must be an integer in [2, 32] (got ${JSON.stringify(bits)})`);
      }
      const clipRatio = v['clipRatio'] ?? 1;
      if (typeof clipRatio !== 'number' || !Number.isFinite(clipRatio) || clipRatio <= 0) {
        fail(`int quantizer 'clipRatio' must be a positive number (got ${JSON.stringify(clipRatio)})`);
      }
      return { kind: 'int', bits: bits as number, clipRatio: clipRatio as number };
    }
    case 'ternary': {
      const t = v['thresholdRatio'];
      if (typeof t !== 'number' || !Number.isFinite(t) || t < 0) {
        fail(`ternary quantizer 'thresholdRatio' must be a non-negative number (got ${JSON.stringify(t)})`);
      }
      return { kind: 'ternary', thresholdRatio: t as number };
    }
    default:
      return fail(`unknown quantizer kind ${JSON.stringify(v['kind'])} (expected none, int, ternary or binary)`);
  }
}

function parseRotation(v: unknown, path: string, file: string): KroneckerRotation {
  const fail = (problem: string): never => {
    throw new BwqError(`${path}: ${problem}`, { file });
  };
  if (!isObject(v)) return fail('rotation must be an object');
  const kind = v['kind'];
  if (kind !== 'kronecker' && kind !== 'kronecker_remainder') {
    fail(`unknown rotation kind ${JSON.stringify(kind)} (expected kronecker or kronecker_remainder)`);
  }
  const keys = kind === 'kronecker' ? ['r1', 'r2'] : ['r1', 'r2', 'r3'];
  for (const key of keys) {
    const name = v[key];
    if (typeof name !== 'string' || name.length === 0) fail(`rotation '${key}' must be a tensor name`);
  }
  if (kind === 'kronecker') {
    if (v['r3'] !== undefined) fail(`rotation 'r3' belongs to kind kronecker_remainder, not kronecker`);
    return { kind: 'kronecker', r1: v['r1'] as string, r2: v['r2'] as string };
  }
  return { kind: 'kronecker_remainder', r1: v['r1'] as string, r2: v['r2'] as string, r3: v['r3'] as string };
}

function parseLayer(v: unknown, index: number, ctx: QuantizationContext): LayerRecipe {
  const path = `quantization_config.layers[${index}]`;
  const fail = (problem: string): never => {
    throw new BwqError(`${path}: ${problem}`, { file: ctx.file });
  };
  if (!isObject(v)) return fail('layer recipe must be an object');
  const linearsRaw = v['linears'];
  if (!isObject(linearsRaw)) return fail("'linears' must be an object");
  const linears: Partial<Record<LinearRole, LinearInputRecipe>> = {};
  for (const [role, entry] of Object.entries(linearsRaw)) {
    if (!(LINEAR_ROLES as readonly string[]).includes(role)) fail(`unknown linear role '${role}' (expected one of ${LINEAR_ROLES.join(', ')})`);
    if (role === 'gate_proj' && ctx.architecture === 'gpt2') fail(`gpt2 has no 'gate_proj'`);
    const rp = `${path}.linears.${role}`;
    if (!isObject(entry)) fail(`${role}: must be an object`);
    const e = entry as Record<string, unknown>;
    const recipe: { rotation?: KroneckerRotation; quantizer: ActivationQuantizer } = {
      quantizer: parseActivationQuantizer(e['quantizer'], `${rp}.quantizer`, ctx.file),
    };
    if (e['rotation'] !== undefined && e['rotation'] !== null) recipe.rotation = parseRotation(e['rotation'], `${rp}.rotation`, ctx.file);
    linears[role as LinearRole] = recipe;
  }
  const layer: { linears: typeof linears; attention?: AttentionRecipe } = { linears };
  const att = v['attention'];
  if (att !== undefined && att !== null) {
    if (!isObject(att)) fail("'attention' must be an object");
    const a = att as Record<string, unknown>;
    const q = (k: string): ActivationQuantizer => parseActivationQuantizer(a[k], `${path}.attention.${k}`, ctx.file);
    const probsRow = a['probsRow'] ?? 'window';
    if (probsRow !== 'unmasked' && probsRow !== 'window') {
      fail(`attention.probsRow must be "unmasked" or "window" (got ${JSON.stringify(probsRow)})`);
    }
    layer.attention = { query: q('query'), key: q('key'), probs: q('probs'), value: q('value'), probsRow: probsRow as ProbsRow };
    if (probsRow === 'unmasked' && layer.attention.probs.kind === 'binary') {
      fail('attention.probs: a binary quantizer is not defined over the unmasked keys (sign⁺ would give the masked keys +s)');
    }
  }
  return layer;
}

/** Validates a `quantization_config` object. Non-bwq methods are rejected (we cannot run them). */
export function parseQuantizationConfig(v: unknown, ctx: QuantizationContext): QuantizationConfig {
  const fail = (problem: string): never => {
    throw new BwqError(`quantization_config: ${problem}`, { file: ctx.file });
  };
  if (!isObject(v)) return fail('must be an object');
  const method = v['quant_method'];
  if (method !== 'bwq') {
    return fail(`quant_method ${JSON.stringify(method)} is not supported (only models quantized by bwq, quant_method "bwq")`);
  }
  const version = v['bwq_version'];
  if (typeof version !== 'string') fail("'bwq_version' must be a string");
  const m = v['method'];
  if (typeof m !== 'string' || !(METHODS as readonly string[]).includes(m)) {
    fail(`'method' must be one of ${METHODS.join(', ')} (got ${JSON.stringify(m)})`);
  }
  if (v['w_bits'] !== 1) fail(`'w_bits' must be 1 (got ${JSON.stringify(v['w_bits'])})`);
  const aBits = v['a_bits'];
  if (!(aBits === 'ternary' || (typeof aBits === 'number' && Number.isInteger(aBits) && aBits >= 2 && aBits <= 32))) {
    fail(`'a_bits' must be "ternary" or an integer in [2, 32] (got ${JSON.stringify(aBits)})`);
  }
  const layersRaw = v['layers'];
  if (!Array.isArray(layersRaw)) return fail("'layers' must be an array");
  if (layersRaw.length !== ctx.numLayers) {
    fail(`'layers' has ${layersRaw.length} entries but the model has ${ctx.numLayers} layers`);
  }
  const layers = layersRaw.map((layer, i) => parseLayer(layer, i, ctx));
  const packed = v['packed_weights'];
  // billm / arb have no packed model (src/quant/recipe.ts SIMULATED_ONLY_METHODS): no packed_weights, no ternary activations
  const simulatedOnly = (SIMULATED_ONLY_METHODS as readonly unknown[]).includes(m);
  if (simulatedOnly) {
    if (packed !== undefined) fail(`'packed_weights' must be absent for method ${m as string} (it has no packed model)`);
    if (aBits === 'ternary') fail(`'a_bits' must be an integer for method ${m as string} (got "ternary")`);
  } else {
    if (typeof packed !== 'string' || packed.length === 0) fail("'packed_weights' must be a file name");
    if ((packed as string).startsWith('/') || (packed as string).split(/[\\/]/).includes('..')) {
      fail(`'packed_weights' must be a path inside the model directory (got ${JSON.stringify(packed)})`);
    }
  }
  const settingsRaw = v['settings'] ?? {};
  if (!isObject(settingsRaw)) return fail("'settings' must be an object");
  const settings: Record<string, string | number | boolean> = {};
  for (const [k, s] of Object.entries(settingsRaw)) {
    if (typeof s !== 'string' && typeof s !== 'number' && typeof s !== 'boolean') {
      fail(`settings.${k} must be a string, number or boolean`);
    }
    settings[k] = s as string | number | boolean;
  }
  return {
    quant_method: 'bwq',
    bwq_version: version as string,
    method: m as QuantizationConfig['method'],
    w_bits: 1,
    a_bits: aBits as number | 'ternary',
    layers,
    ...(simulatedOnly ? {} : { packed_weights: packed as string }),
    settings,
  };
}

/** Every rotation tensor name the recipe refers to (deduplicated, in order of appearance). */
export function rotationTensorNames(q: QuantizationConfig): string[] {
  const names = new Set<string>();
  for (const layer of q.layers) {
    for (const role of LINEAR_ROLES) {
      const rotation = layer.linears[role]?.rotation;
      if (rotation !== undefined) for (const name of rotationTensorNamesOf(rotation)) names.add(name);
    }
  }
  return [...names];
}
