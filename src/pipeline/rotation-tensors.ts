/**
 * The tensors and the recipe entry of one group's learned OKT rotation, as `bwq quantize` writes them: R1, R2 as
 * `model.layers.L.<group>.okt_r1|okt_r2` (kind kronecker) and, for widths split as diag(R1 ⊗ R2, R3)
 * (src/quant/kronecker.ts kroneckerSplit), R3 as `…okt_r3` (kind kronecker_remainder); float32.
 */
import type { KroneckerRotation } from '../quant/recipe.js';

export interface GroupRotation {
  r1: Float64Array;
  a: number;
  r2: Float64Array;
  b: number;
  r: number;
  r3: Float64Array | undefined;
}

export function groupRotationTensors(layer: number, group: string, rotation: GroupRotation): {
  recipe: KroneckerRotation;
  tensors: Map<string, { data: Float32Array; shape: number[] }>;
} {
  const name = (k: string): string => `model.layers.${layer}.${group}.okt_${k}`;
  const tensors = new Map<string, { data: Float32Array; shape: number[] }>();
  tensors.set(name('r1'), { data: Float32Array.from(rotation.r1), shape: [rotation.a, rotation.a] });
  tensors.set(name('r2'), { data: Float32Array.from(rotation.r2), shape: [rotation.b, rotation.b] });
  if (rotation.r === 0) return { recipe: { kind: 'kronecker', r1: name('r1'), r2: name('r2') }, tensors };
  if (rotation.r3 === undefined || rotation.r3.length !== rotation.r * rotation.r) {
    throw new Error(`${name('r3')}: remainder factor must be [${rotation.r}, ${rotation.r}]`);
  }
  tensors.set(name('r3'), { data: Float32Array.from(rotation.r3), shape: [rotation.r, rotation.r] });
  return { recipe: { kind: 'kronecker_remainder', r1: name('r1'), r2: name('r2'), r3: name('r3') }, tensors };
}
