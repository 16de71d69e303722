import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/linalg/random.js';
import { nativeWeightPasses } from '../../src/native/weight-passes.js';
import { psp } from '../../src/quant/psp.js';
import { jsWeightPasses } from '../../src/quant/weight-passes.js';
import { compensateColumnBlocks, compensationFrame } from '../../src/quant/column-blocks.js';
import { jsMatmul } from '../../src/linalg/matmul.js';
import { runtimeAvailable } from '../../src/eval/backend.js';
import { transposeF32 } from '../../src/linalg/dense.js';

const rows = 37;
const cols = 301;
const rng = new Rng(11);
const gaussian = (n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => scale * rng.normal());
const w = gaussian(rows * cols);
const dense = gaussian(rows * cols, 0.1);
const dw = Float64Array.from({ length: cols }, () => Math.exp(0.5 * rng.normal()));
const d2 = Float64Array.from(dw, (x) => x * x);
const rank = 5;
const lrA = gaussian(rows * rank, 0.2);
const lrB = gaussian(rank * cols, 0.2);

/** Every output of the four passes for one implementation. */
function runAll(p: typeof jsWeightPasses) {
  const signs = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  p.bStep(w, dense, dw, d2, rows, cols, signs, scales);
  const residual = new Float32Array(rows * cols);
  const half = new Float64Array(rows);
  const plain = new Float64Array(rows);
  p.residual(w, signs, scales, dw, dense, rows, cols, residual, half, plain);
  const dist = new Float64Array(rows);
  p.distance(w, dense, rows, cols, dist);
  const weight = new Float32Array(rows * cols);
  p.weight(signs, scales, lrA, lrB, rank, rows, cols, weight);
  const difference = Float32Array.from(w);
  p.subtract(difference, dense, rows * cols - 3); // the last three stay
  const transposed = p.transpose(w, rows, cols);
  // a compensation block of 7 columns at column 5 of a [rows, cols] result
  const width = 7;
  const bt = transposed.subarray(5 * rows, (5 + width) * rows);
  const qb = dense.subarray(0, rows * width);
  const diag = dw.subarray(0, width);
  const q = new Float32Array(rows * cols);
  const et = new Float32Array(width * rows);
  p.blockErrors(bt, qb, diag, rows, width, q.subarray(5), cols, et);
  // the compensation's sign quantizer on the same block, written at column 5
  const blockSigns = new Int8Array(rows * cols);
  const blockOut = new Float32Array(rows * width);
  p.signBlock(transposeF32(bt, width, rows), rows, width, scales, blockSigns, cols, 5, blockOut);
  // the scale fit's sums with and without a low-rank term, the binarization sums, the bit packing
  const [num, den, numLow, denLow] = [0, 1, 2, 3].map(() => new Float64Array(rows));
  p.scaleFit(dense, w, new Float32Array(0), signs, rows, cols, num!, den!);
  p.scaleFit(dense, w, weight, signs, rows, cols, numLow!, denLow!);
  const binErr = new Float64Array(rows);
  const binEnergy = new Float64Array(rows);
  p.binarization(w, rows, cols, binErr, binEnergy);
  const packed = p.packSigns(signs, rows, cols);
  return { signs, scales, residual, half, plain, dist, weight, difference, transposed, q, et, blockSigns, blockOut, num, den, numLow, denLow, binErr, binEnergy, packed };
}

describe('PSP\'s and the column-block compensation\'s passes over the weight', () => {
  it('the TypeScript reference computes what its equations say', () => {
    const r = runAll(jsWeightPasses);
    let d2sum = 0;
    for (let c = 0; c < cols; c++) d2sum += d2[c]!;
    for (const row of [0, 17, rows - 1]) {
      let acc = 0;
      let half = 0;
      let plain = 0;
      let dist = 0;
      for (let c = 0; c < cols; c++) {
        const i = row * cols + c;
        const t = Math.fround(w[i]! - dense[i]! / dw[c]!);
        expect(r.signs[i]).toBe(t >= 0 ? 1 : -1);
        acc += d2[c]! * Math.abs(t);
        const e = w[i]! - r.scales[row]! * r.signs[i]!;
        plain += e * e;
        expect(r.residual[i]).toBe(Math.fround(e * dw[c]!));
        half += (r.residual[i]! - dense[i]!) ** 2;
        dist += (w[i]! - dense[i]!) ** 2;
        let v = r.scales[row]! * r.signs[i]!;
        for (let k = 0; k < rank; k++) v += lrA[row * rank + k]! * lrB[k * cols + c]!;
        expect(r.weight[i]).toBe(Math.fround(v));
        expect(r.transposed[c * rows + row]).toBe(w[i]);
        if (i < rows * cols - 3) expect(r.difference[i]).toBe(Math.fround(w[i]! - dense[i]!));
      }
      for (let c = 0; c < 7; c++) {
        expect(r.q[row * cols + 5 + c]).toBe(dense[row * 7 + c]);
        expect(r.et[c * rows + row]).toBe(Math.fround(Math.fround(w[row * cols + 5 + c]! - dense[row * 7 + c]!) / dw[c]!));
      }
      for (let c = 0; c < 7; c++) {
        const positive = w[row * cols + 5 + c]! >= 0;
        expect(r.blockSigns[row * cols + 5 + c]).toBe(positive ? 1 : -1);
        expect(r.blockOut[row * 7 + c]).toBe(positive ? r.scales[row] : -r.scales[row]!);
      }
      let num = 0;
      let den = 0;
      let numLow = 0;
      let sumAbs = 0;
      let sumSq = 0;
      for (let c = 0; c < cols; c++) {
        const i = row * cols + c;
        num += dense[i]! * w[i]!;
        den += dense[i]! * r.signs[i]!;
        numLow += dense[i]! * (w[i]! - r.weight[i]!);
        sumAbs += Math.abs(w[i]!);
        sumSq += w[i]! * w[i]!;
      }
      expect([r.num[row], r.den[row], r.numLow[row], r.denLow[row]]).toEqual([num, den, numLow, den]);
      const alpha = sumAbs / cols;
      expect([r.binErr[row], r.binEnergy[row]]).toEqual([Math.max(0, sumSq - cols * alpha * alpha), sumSq]);
      for (let u = 0; u < Math.ceil(cols / 32); u++) {
        let word = 0;
        for (let j = 0; j < 32 && 32 * u + j < cols; j++) if (r.signs[row * cols + 32 * u + j]! > 0) word += 2 ** j;
        expect(r.packed[row * Math.ceil(cols / 32) + u]).toBe(word);
      }
      expect(r.scales[row]).toBe(Math.fround(acc / d2sum));
      expect(r.half[row]).toBe(half);
      expect(r.plain[row]).toBe(plain);
      expect(r.dist[row]).toBe(dist);
    }
  });

  it.runIf(runtimeAvailable())('the native passes (CPU threads) equal the reference bit for bit, and so does PSP with them', async () => {
    const native = nativeWeightPasses();
    expect(native).toBeDefined();
    const a = runAll(jsWeightPasses);
    const b = runAll(native!);
    for (const key of Object.keys(a) as Array<keyof typeof a>) expect(Array.from(b[key]), key).toEqual(Array.from(a[key]));
    const options = { rank: 4, iterations: 3, seed: 5, columnWeights: dw };
    const ref = await psp(w, rows, cols, options);
    const got = await psp(w, rows, cols, { ...options, passes: native! });
    expect(got.history).toEqual(ref.history);
    expect(Array.from(got.signs)).toEqual(Array.from(ref.signs));
    expect(Array.from(got.scales)).toEqual(Array.from(ref.scales));
    expect(Array.from(got.lrB)).toEqual(Array.from(ref.lrB));
    expect(got.errorAfter).toBe(ref.errorAfter);
    // the column-block compensation through either set of passes
    const h = Float32Array.from({ length: cols * cols }, (_, i) => (i % (cols + 1) === 0 ? 2 + (i % 7) : 0.01 * Math.sin(i)));
    const frame = (await compensationFrame(h, cols, 0.1, jsMatmul))!;
    const sign = (block: Float32Array): Float32Array => block.map((v) => (v >= 0 ? 0.25 : -0.25));
    const qRef = await compensateColumnBlocks(w, rows, cols, frame, 64, sign, jsMatmul);
    const qNative = await compensateColumnBlocks(w, rows, cols, frame, 64, sign, jsMatmul, native!);
    expect(Array.from(qNative)).toEqual(Array.from(qRef));
  });

  it.runIf(runtimeAvailable())('the native passes refuse short arrays with a message naming the array', () => {
    const native = nativeWeightPasses()!;
    expect(() => native.bStep(w, dense.subarray(0, 10), dw, d2, rows, cols, new Int8Array(rows * cols), new Float32Array(rows)))
      .toThrow(/dense has 10 elements, needs 11137/);
    expect(() => native.weight(new Int8Array(rows * cols), new Float32Array(rows), lrA, lrB, rank + 1, rows, cols, new Float32Array(rows * cols)))
      .toThrow(/lrA has 185 elements, needs 222/);
  });
});
