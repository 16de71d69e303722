/**
 * JavaScript reference of the activation quantizers defined in src/quant/recipe.ts, applied per
 * row (token) of length `cols`. Arithmetic is rounded to float32 at each step (Math.fround) so the
 * result matches a float32 implementation (PyTorch, onnxruntime) bit for bit except where a
 * float32 sum order differs (mean/max are order-independent for max; means are summed in f64).
 */
import type { ActivationQuantizer } from './recipe.js';

const f = Math.fround;

/** Round to nearest, ties to even (IEEE roundTiesToEven, like torch.round / ONNX Round). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x); // ties toward +∞
  if (r - x === 0.5 && r % 2 !== 0) return r - 1;
  return r;
}

/**
 * The per-row constants of the quantizers, with the float32 rounding order the recipe fixes. Every
 * implementation (this fake-quantizer, the native backend's integer codes) takes them from here.
 */
/** int quantizer step s = clipRatio·max|x| / qmax (1 for an all-zero row). */
export function intStep(absMax: number, qmax: number, clipRatio: number): number {
  return absMax === 0 ? 1 : f(f(f(clipRatio) * absMax) / qmax);
}

/** ternary threshold Δ = thresholdRatio · mean|x|, from the row's Σ|x|. */
export function ternaryThreshold(sumAbs: number, cols: number, thresholdRatio: number): number {
  return f(f(thresholdRatio) * f(f(sumAbs) / cols));
}

/** Mean magnitude Σ|x| / count (0 for an empty set): the ternary and binary scales. */
export function meanMagnitude(sumAbs: number, count: number): number {
  return count === 0 ? 0 : f(f(sumAbs) / count);
}

export function quantizeRows(x: Float32Array, cols: number, q: ActivationQuantizer): Float32Array {
  const out = new Float32Array(x.length);
  quantizeRowsInto(x, cols, q, out);
  return out;
}

/** quantizeRowsInto's signature: the reference below, or the native addon's (src/native/act-quant.ts nativeQuantizeRows). */
export type QuantizeRowsInto = (x: Float32Array, cols: number, q: ActivationQuantizer, out: Float32Array) => void;

/** Same as quantizeRows, writing into `out` (may alias `x`). */
export function quantizeRowsInto(x: Float32Array, cols: number, q: ActivationQuantizer, out: Float32Array): void {
  if (cols <= 0 || x.length % cols !== 0) throw new Error(`quantizeRows: length ${x.length} is not a multiple of ${cols}`);
  const rows = x.length / cols;
  switch (q.kind) {
    case 'none':
      if (out !== x) out.set(x);
      return;
    case 'int': {
      const qmax = 2 ** (q.bits - 1) - 1;
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        let amax = 0;
        for (let j = 0; j < cols; j++) amax = Math.max(amax, Math.abs(x[o + j]!));
        const s = intStep(amax, qmax, q.clipRatio);
        for (let j = 0; j < cols; j++) {
          let v = roundHalfEven(f(x[o + j]! / s));
          if (v > qmax) v = qmax;
          else if (v < -qmax) v = -qmax;
          out[o + j] = f(v * s);
        }
      }
      return;
    }
    case 'ternary': {
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        let sumAbs = 0;
        for (let j = 0; j < cols; j++) sumAbs += Math.abs(x[o + j]!);
        const delta = ternaryThreshold(sumAbs, cols, q.thresholdRatio);
        let kept = 0;
        let keptSum = 0;
        for (let j = 0; j < cols; j++) {
          const a = Math.abs(x[o + j]!);
          if (a > delta) {
            kept++;
            keptSum += a;
          }
        }
        const s = meanMagnitude(keptSum, kept);
        for (let j = 0; j < cols; j++) {
          const v = x[o + j]!;
          out[o + j] = Math.abs(v) > delta ? (v > 0 ? s : -s) : 0;
        }
      }
      return;
    }
    case 'binary': {
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        let sumAbs = 0;
        for (let j = 0; j < cols; j++) sumAbs += Math.abs(x[o + j]!);
        const s = meanMagnitude(sumAbs, cols);
        for (let j = 0; j < cols; j++) out[o + j] = x[o + j]! >= 0 ? s : -s;
      }
      return;
    }
  }
}

/** Short human description, e.g. "int6(clip 0.9)" / "ternary(Δ 0.7·mean|x|)". */
export function describeQuantizer(q: ActivationQuantizer): string {
  switch (q.kind) {
    case 'none':
      return 'float';
    case 'int':
      return `int${q.bits}(clip ${q.clipRatio})`;
    case 'ternary':
      return `ternary(${q.thresholdRatio}·mean|x|)`;
    case 'binary':
      return 'binary';
  }
}
