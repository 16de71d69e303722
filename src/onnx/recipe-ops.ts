/**
 * ONNX ops for the fake-quantization recipe (src/quant/recipe.ts), per row of the last axis.
 *
 *   int b bits:  qmax = 2^(b-1)-1, a = max|x|, s = (clipRatio·a)/qmax (s = 1 where a = 0),
 *                q = clip(round_half_even(x/s), -qmax, qmax)·s               (ONNX Round is half-even)
 *   ternary:     Δ = thresholdRatio·mean|x|, m = [|x| > Δ], s = Σ|x|·m / max(Σm, 1), q = s·sign(x)·m
 *   binary:      s = mean|x|, q = s·sign⁺(x)   (sign⁺(0) = +1)
 *   rotation:    x (length n = a·b) → X = reshape(x, a, b) → X' = R1ᵀ·X·R2 → reshape back
 *                (kronecker_remainder, n = a·b + r: the last r features times R3, concatenated)
 *
 * All-zero rows give 0 (never NaN): the int scale falls back to 1, the ternary count to 1.
 * With `rowCount` (a value broadcasting against the rows, e.g. the attention probabilities' unmasked keys per
 * query row) the ternary mean is Σ|x| / rowCount instead of mean|x| over the whole row (src/quant/attention-probs.ts).
 */
import type { ActivationQuantizer, KroneckerRotation } from '../quant/recipe.js';
import { BwqError } from '../errors.js';
import { DataType } from './onnx-proto.js';
import type { GraphBuilder } from './graph-builder.js';

export function validateQuantizer(q: ActivationQuantizer, where: string): void {
  switch (q.kind) {
    case 'none':
    case 'binary':
      return;
    case 'int':
      if (!Number.isInteger(q.bits) || q.bits < 2 || q.bits > 32) throw new BwqError(`${where}: int quantizer bits must be 2..32, got ${q.bits}`);
      if (!(q.clipRatio > 0)) throw new BwqError(`${where}: clipRatio must be positive, got ${q.clipRatio}`);
      return;
    case 'ternary':
      if (!(q.thresholdRatio >= 0)) throw new BwqError(`${where}: thresholdRatio must be >= 0, got ${q.thresholdRatio}`);
      return;
    default:
      throw new BwqError(`${where}: unknown quantizer kind "${(q as { kind: string }).kind}"`);
  }
}

/** Inserts the quantizer on `x` (any rank ≥ 1, rows = last axis); returns the quantized value. */
export function quantizeOp(g: GraphBuilder, x: string, q: ActivationQuantizer, rowCount?: string): string {
  const axes = [-1];
  switch (q.kind) {
    case 'none':
      return x;
    case 'int': {
      const qmax = 2 ** (q.bits - 1) - 1;
      const amax = g.node('ReduceMax', [g.node('Abs', [x])], { axes, keepdims: 1 });
      const raw = g.div(g.mul(amax, g.constFloat([q.clipRatio])), g.constFloat([qmax]));
      const isZero = g.node('Equal', [amax, g.constFloat([0])]);
      const s = g.node('Where', [isZero, g.constFloat([1]), raw]);
      const codes = g.node('Clip', [g.node('Round', [g.div(x, s)]), g.constFloat([-qmax]), g.constFloat([qmax])]);
      return g.mul(codes, s);
    }
    case 'ternary': {
      const ax = g.node('Abs', [x]);
      const axesInput = g.constInt64(axes);
      const mean = rowCount === undefined
        ? g.node('ReduceMean', [ax], { axes, keepdims: 1 })
        : g.div(g.node('ReduceSum', [ax, axesInput], { keepdims: 1 }), rowCount);
      const delta = g.mul(mean, g.constFloat([q.thresholdRatio]));
      const m = g.node('Cast', [g.node('Greater', [ax, delta])], { to: DataType.FLOAT });
      const count = g.node('ReduceSum', [m, axesInput], { keepdims: 1 });
      const sum = g.node('ReduceSum', [g.mul(ax, m), axesInput], { keepdims: 1 });
      const s = g.div(sum, g.node('Max', [count, g.constFloat([1])]));
      return g.mul(g.mul(g.node('Sign', [x]), m), s);
    }
    case 'binary': {
      if (rowCount !== undefined) throw new BwqError('a binary quantizer is not defined over the unmasked keys of attention probabilities');
      const s = g.node('ReduceMean', [g.node('Abs', [x])], { axes, keepdims: 1 });
      const sign = g.node('Where', [g.node('GreaterOrEqual', [x, g.constFloat([0])]), g.constFloat([1]), g.constFloat([-1])]);
      return g.mul(sign, s);
    }
    default:
      throw new BwqError(`unknown quantizer kind "${(q as { kind: string }).kind}"`);
  }
}

/**
 * Kronecker rotation of the last axis of a rank-3 value x [B, S, n]: X' = R1ᵀ X R2 with X = x
 * reshaped to (a, b); r1 [a, a] and r2 [b, b] are graph values.
 */
export function rotateOp(g: GraphBuilder, x: string, r1: string, r2: string, a: number, b: number,
  remainder?: { r3: string; r: number }): string {
  if (remainder !== undefined && remainder.r > 0) {
    // diag(R1 ⊗ R2, R3): the first a·b features as below, the last r times R3
    const [head, tail] = g.nodeN('Split', [x, g.constInt64([a * b, remainder.r])], 2, { axis: -1 }) as [string, string];
    return g.node('Concat', [rotateOp(g, head, r1, r2, a, b), g.matmul(tail, remainder.r3)], { axis: -1 });
  }
  const x4 = g.reshape(x, [0, 0, a, b]);
  const right = g.matmul(x4, r2); // X R2            [B,S,a,b]
  const swapped = g.transpose(right, [0, 1, 3, 2]); // (X R2)ᵀ  [B,S,b,a]
  const left = g.matmul(swapped, r1); // (X R2)ᵀ R1 = (R1ᵀ X R2)ᵀ
  const back = g.transpose(left, [0, 1, 3, 2]);
  return g.reshape(back, [0, 0, a * b]);
}

export type RotationResolver = (rotation: KroneckerRotation) => {
  r1: string; r2: string; a: number; b: number;
  /** kronecker_remainder: R3's graph value and its size r */
  remainder?: { r3: string; r: number };
};
