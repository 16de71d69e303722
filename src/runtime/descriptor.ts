/**
 * The numeric description of a model that the native runtime takes (native/src/addon_runtime.cpp reads it
 * in this order): the config, the table of input preparations (rotation + activation quantizer, shared by
 * linears with equal keys), the rotations' factor sizes (a, b, r), and per layer which linears are packed, their
 * input, low-rank rank and bias, the four attention-operand quantizers and the probs row (probsRowCode).
 */
import { BwqError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { probsOverUnmasked, type ActivationQuantizer, type AttentionRecipe, type LinearRole } from '../quant/recipe.js';

export const ROLES: readonly LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface InputPrepDescription {
  /** index into `rotations`, or −1 */
  rotation: number;
  quantizer: ActivationQuantizer;
}

export interface LinearDescription {
  packed: boolean;
  input: number;
  rank: number;
  bias: boolean;
}

/** One rotation diag(R1 ⊗ R2, R3) of a linear input of width a·b + r (r = 0, r3 undefined: R1 ⊗ R2). */
export interface RotationDescription {
  a: number;
  b: number;
  r: number;
  r1: string;
  r2: string;
  r3: string | undefined;
}

export interface ModelDescription {
  config: ModelConfig;
  ropeHalf: number;
  inputs: InputPrepDescription[];
  /** Kronecker factors R1 [a, a], R2 [b, b] and the remainder block R3 [r, r] (r = 0: none) by tensor name */
  rotations: RotationDescription[];
  layers: { linears: LinearDescription[]; attention: AttentionRecipe | undefined }[];
}

const NONE: ActivationQuantizer = { kind: 'none' };

/** (kind, bits, param) of a quantizer as the native side reads it; undefined = none. */
export function quantizerCodes(q: ActivationQuantizer | undefined): [number, number, number] {
  if (q === undefined) return [0, 0, 0];
  switch (q.kind) {
    case 'none': return [0, 0, 0];
    case 'int': return [1, q.bits, q.clipRatio];
    case 'ternary': return [2, 0, q.thresholdRatio];
    case 'binary': return [3, 0, 0];
  }
}

/** The probs row as the native side reads it (AttentionRecipe::probs_unmasked): 1 unmasked keys, 0 whole window. */
export function probsRowCode(a: AttentionRecipe | undefined): number {
  return probsOverUnmasked(a) ? 1 : 0;
}

function actCode(config: ModelConfig): number {
  switch (config.hiddenAct) {
    case 'silu': return 0;
    case 'gelu': return 1;
    case 'gelu_new':
    case 'gelu_pytorch_tanh': return 2;
    case 'relu': return 3;
  }
}

/** The Float64Array native/src/addon_runtime.cpp reads. */
export function encodeDescription(d: ModelDescription, file: string): Float64Array {
  const c = d.config;
  const out: number[] = [c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.numKvHeads, c.headDim,
    c.vocabSize, c.maxPositionEmbeddings, c.slidingWindow ?? 0, d.ropeHalf, c.normEps, actCode(c), c.qkNorm ? 1 : 0];
  out.push(d.inputs.length);
  for (const input of d.inputs) out.push(input.rotation, ...quantizerCodes(input.quantizer));
  out.push(d.rotations.length);
  for (const r of d.rotations) out.push(r.a, r.b, r.r);
  for (const [i, layer] of d.layers.entries()) {
    for (const lin of layer.linears) out.push(lin.packed ? 1 : 0, lin.input, lin.rank, lin.bias ? 1 : 0);
    const a = layer.attention;
    if (a?.probs.kind === 'binary') {
      throw new BwqError(`layer ${i}: a binary probability quantizer is not supported by the runtime`, { file });
    }
    for (const q of [a?.query ?? NONE, a?.key ?? NONE, a?.probs ?? NONE, a?.value ?? NONE]) out.push(...quantizerCodes(q));
    out.push(probsRowCode(a));
  }
  return Float64Array.from(out);
}
