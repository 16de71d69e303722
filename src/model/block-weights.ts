/**
 * The float weights of one decoder block as the quantize pipeline handles them (nn.Linear layout [out, in],
 * norms, qk-norms, and the rotation tensors the model's recipe names), read from a model directory. Both
 * block engines (src/onnx/block-runner.ts, src/runtime/block-runner.ts) run blocks on such weights.
 */
import { BwqError } from '../errors.js';
import type { KroneckerRotation, LayerRecipe, LinearRole } from '../quant/recipe.js';
import { rotationTensorNamesOf } from '../quant/recipe.js';
import type { Tensor } from '../tensor.js';
import { readLinearWeight, readNormWeight } from './load-weights.js';
import type { ModelDir } from './model-dir.js';
import { linearByRole } from './weights.js';

export const BLOCK_ROLES: readonly LinearRole[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface BlockWeights {
  /** role → weight [out,in] row-major (nn.Linear layout, already un-transposed); gate undefined for gpt2 */
  linears: Record<LinearRole, Float32Array | undefined>;
  biases: Partial<Record<LinearRole, Float32Array>>;
  inputNorm: { weight: Float32Array; bias?: Float32Array };
  postAttentionNorm: { weight: Float32Array; bias?: Float32Array };
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  /** extra tensors a recipe refers to (OKT R1/R2 by tensor name) */
  extra: Map<string, Tensor>;
}

/** The distinct Kronecker rotations a layer recipe names. */
export function recipeRotations(recipe: LayerRecipe | undefined): KroneckerRotation[] {
  const out = new Map<string, KroneckerRotation>();
  for (const r of Object.values(recipe?.linears ?? {})) {
    if (r?.rotation !== undefined) out.set(rotationTensorNamesOf(r.rotation).join('\u0000'), r.rotation);
  }
  return [...out.values()];
}

/** Block `layer`'s weights from the model's checkpoint (rotations of the model's own recipe included). */
export async function loadBlockWeights(model: ModelDir, layer: number): Promise<BlockWeights> {
  const { config, checkpoint } = model;
  const names = model.weightNames.layers[layer];
  if (names === undefined) throw new BwqError(`layer ${layer} out of range (model has ${config.numLayers})`, { file: model.dir });
  const linears = {} as Record<LinearRole, Float32Array | undefined>;
  const biases: Partial<Record<LinearRole, Float32Array>> = {};
  for (const role of BLOCK_ROLES) {
    const n = linearByRole(names, role);
    if (n === undefined) {
      linears[role] = undefined;
      continue;
    }
    const w = await readLinearWeight(checkpoint, n);
    linears[role] = w.weight;
    if (w.bias !== undefined) biases[role] = w.bias;
  }
  const norm = async (n: typeof names.inputNorm): Promise<{ weight: Float32Array; bias?: Float32Array }> => {
    const r = await readNormWeight(checkpoint, n);
    return r.bias === undefined ? { weight: r.weight } : { weight: r.weight, bias: r.bias };
  };
  const weights: BlockWeights = {
    linears,
    biases,
    inputNorm: await norm(names.inputNorm),
    postAttentionNorm: await norm(names.postAttentionNorm),
    extra: new Map(),
  };
  if (names.qNorm !== undefined) weights.qNorm = await checkpoint.readFloat32(names.qNorm.weight);
  if (names.kNorm !== undefined) weights.kNorm = await checkpoint.readFloat32(names.kNorm.weight);
  for (const r of recipeRotations(config.quantization?.layers[layer])) {
    for (const n of rotationTensorNamesOf(r)) if (!weights.extra.has(n)) weights.extra.set(n, await checkpoint.readTensor(n));
  }
  return weights;
}
