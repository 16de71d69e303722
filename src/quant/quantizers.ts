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

export function quantizeRows(x: Float32Array, cols: number, q: ActivationQuantizer): Float32Array {
  const out = new Float32Array(x.length);
  quantizeRowsInto(x, cols, q, out);
  return out;
}

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
      const clip = f(q.clipRatio);
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        let amax = 0;
        for (let j = 0; j < cols; j++) amax = Math.max(amax, Math.abs(x[o + j]!));
        const s = amax === 0 ? 1 : f(f(clip * amax) / qmax);
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
      const ratio = f(q.thresholdRatio);
      for (let r = 0; r < rows; r++) {
        const o = r * cols;
        let sumAbs = 0;
        for (let j = 0; j < cols; j++) sumAbs += Math.abs(x[o + j]!);
        const delta = f(ratio * f(f(sumAbs) / cols));
        let kept = 0;
        let keptSum = 0;
        for (let j = 0; j < cols; j++) {
          const a = Math.abs(x[o + j]!);
          if (a > delta) {
            kept++;
            keptSum += a;
          }
        }
        const s = kept === 0 ? 0 : f(f(keptSum) / kept);
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
        const s = f(f(sumAbs) / cols);
        for (let j = 0; j < cols; j++) out[o + j] = x[o + j]! >= 0 ? s : -s;
      }
      return;
    }
  }
}

/** Ternary codes t ∈ {-1, 0, +1} and per-row scales s of the ternary quantizer (q(x) = s·t). */
export function ternaryCodes(x: Float32Array, cols: number, thresholdRatio: number): { codes: Int8Array; scales: Float32Array } {
  const rows = x.length / cols;
  const codes = new Int8Array(x.length);
  const scales = new Float32Array(rows);
  const q = quantizeRows(x, cols, { kind: 'ternary', thresholdRatio });
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < cols; j++) {
      const v = q[r * cols + j]!;
      codes[r * cols + j] = v > 0 ? 1 : v < 0 ? -1 : 0;
      if (v !== 0) s = Math.abs(v);
    }
    scales[r] = s;
  }
  return { codes, scales };
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
