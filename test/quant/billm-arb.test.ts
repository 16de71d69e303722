/**
 * BiLLM and ARB-LLM_RC weight binarization (src/quant/billm.ts, arb.ts, hessian-blocks.ts) against the
 * independent numpy reference test/fixtures/quant/make_billm_arb_reference.py (its output
 * billm_arb_reference.safetensors is committed; `python3 test/fixtures/quant/make_billm_arb_reference.py`).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { relDiff, maxAbsDiff } from '../helpers/reference-math.js';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { jsMatmul } from '../../src/linalg/matmul.js';
import { choleskyLower, inverseSpd, upperCholeskyOfInverse } from '../../src/linalg/cholesky.js';
import { inputHessian, prepareHessian, quantizeColumnBlocks } from '../../src/quant/hessian-blocks.js';
import { compensationFrame, type CompensationFrame } from '../../src/quant/column-blocks.js';
import { billmBlock, quantizeBillm, residualBinarize, type BillmOptions } from '../../src/quant/billm.js';
import { arbBlock, quantizeArb, rcBinarize, type ArbOptions } from '../../src/quant/arb.js';

const path = fileURLToPath(new URL('../fixtures/quant/billm_arb_reference.safetensors', import.meta.url));
const ref = new Map<string, { data: Float64Array; shape: number[] }>();

beforeAll(async () => {
  const file = await SafetensorsFile.open(path);
  try {
    for (const name of file.names()) {
      const bytes = (await file.readBytes(name)).slice();
      ref.set(name, { data: new Float64Array(bytes.buffer), shape: [...file.info(name).shape] });
    }
  } finally {
    await file.close();
  }
});

function get(name: string): Float64Array {
  const t = ref.get(name);
  if (t === undefined) throw new Error(`fixture has no tensor ${name}`);
  return t.data;
}


function sqErr(w: Float64Array, q: Float64Array, mask?: Uint8Array): number {
  let e = 0;
  for (let i = 0; i < w.length; i++) if (mask === undefined || mask[i] === 1) e += (w[i]! - q[i]!) ** 2;
  return e;
}

const ROWS = 24;
const COLS = 200;
const TOKENS = 96;
// the fixture's frame: blocks of 64 columns (the last one 8 wide), k < 50, 1% damping, 15 ARB rounds
const BILLM: BillmOptions = { blockSize: 64, maxSalient: 50, percdamp: 0.01 };
const ARB: ArbOptions = { ...BILLM, iterations: 15 };

/** H = (2/n) XᵀX in float64 (the pipeline's inputHessian runs the engine's float32 GEMM; compared below). */
function hessian64(): Float64Array {
  const x = get('x');
  const h = new Float64Array(COLS * COLS);
  for (let i = 0; i < COLS; i++) {
    for (let j = 0; j < COLS; j++) {
      let s = 0;
      for (let t = 0; t < TOKENS; t++) s += x[t * COLS + i]! * x[t * COLS + j]!;
      h[i * COLS + j] = (2 / TOKENS) * s;
    }
  }
  return h;
}

function hessian(): ReturnType<typeof prepareHessian> {
  return prepareHessian(hessian64(), COLS, BILLM.percdamp);
}

/** The product's frame: the same damped Hessian factored by the GEMM-blocked Cholesky in float32. */
async function frame(): Promise<CompensationFrame> {
  return (await compensationFrame(hessian64(), COLS, BILLM.percdamp, jsMatmul))!;
}


describe('Cholesky helpers', () => {
  it('factor, invert and give U with UᵀU = H⁻¹ on an SPD matrix', () => {
    const n = 5;
    const b = Float64Array.from({ length: n * n }, (_, i) => Math.sin(i * 1.7) + (i % (n + 1) === 0 ? 3 : 0));
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) a[i * n + j] = a[i * n + j]! + b[i * n + k]! * b[j * n + k]!;
    const l = choleskyLower(a, n);
    const inv = inverseSpd(a, n);
    const { u, inverse } = upperCholeskyOfInverse(a, n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let llt = 0;
        let ainv = 0;
        let utu = 0;
        for (let k = 0; k < n; k++) {
          llt += l[i * n + k]! * l[j * n + k]!;
          ainv += a[i * n + k]! * inv[k * n + j]!;
          utu += u[k * n + i]! * u[k * n + j]!;
        }
        expect(llt).toBeCloseTo(a[i * n + j]!, 10);
        expect(ainv).toBeCloseTo(i === j ? 1 : 0, 10);
        expect(utu).toBeCloseTo(inverse[i * n + j]!, 10);
        if (j < i) expect(u[i * n + j]).toBe(0);
      }
    }
  });

  it('refuses a matrix that is not positive definite', () => {
    expect(() => choleskyLower(Float64Array.from([1, 2, 2, 1]), 2)).toThrow(/not positive definite/);
  });
});

describe('BiLLM / ARB-LLM_RC against the numpy reference', () => {
  it('inputHessian is (2/n) XᵀX', async () => {
    const h = await inputHessian(Float32Array.from(get('x')), TOKENS, COLS, jsMatmul);
    const h64 = hessian64();
    expect(maxAbsDiff(h, h64)).toBeLessThan(1e-5 * Math.max(...h64));
  });

  it('damped Hessian: diag(H⁻¹) as numpy, the all-zero input channel marked dead (float64 reference and the GEMM frame)', async () => {
    const h = hessian();
    expect(maxAbsDiff(h.inverseDiag, get('hinv_diag'))).toBeLessThan(1e-9 * Math.max(...get('hinv_diag')));
    expect([...h.dead].map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0)).toEqual([7]);
    const f = await frame();
    expect(relDiff(f.inverseDiag, get('hinv_diag'))).toBeLessThan(1e-4);
    expect([...f.dead]).toEqual([...h.dead]);
  });

  it('BiLLM residual binarizer (two planes) on a masked region with an empty row', () => {
    const w = get('region_w');
    const mask = Uint8Array.from(get('region_mask'));
    expect(maxAbsDiff(residualBinarize(w, mask, 10, 12, 2), get('r2'))).toBeLessThan(1e-12);
  });

  it('ARB-RC (one and two planes, 15 rounds; two planes before refinement) equals the reference', () => {
    const w = get('region_w');
    const mask = Uint8Array.from(get('region_mask'));
    expect(maxAbsDiff(rcBinarize(w, mask, 10, 12, 1, 15), get('rc1'))).toBeLessThan(1e-10);
    expect(maxAbsDiff(rcBinarize(w, mask, 10, 12, 2, 15), get('rc2'))).toBeLessThan(1e-10);
    expect(maxAbsDiff(rcBinarize(w, mask, 10, 12, 2, 0), get('rc2_t0'))).toBeLessThan(1e-12);
  });

  it('ARB-RC never raises the region error from one refinement round to the next', () => {
    const w = get('region_w');
    const mask = Uint8Array.from(get('region_mask'));
    for (const order of [1, 2] as const) {
      const errors = Array.from({ length: 8 }, (_, t) => sqErr(w, rcBinarize(w, mask, 10, 12, order, t), mask));
      for (let t = 1; t < errors.length; t++) expect(errors[t]!).toBeLessThanOrEqual(errors[t - 1]! * (1 + 1e-12));
      expect(errors[7]!).toBeLessThan(errors[0]!);
      // a second plane lowers the error below one plane's
      if (order === 2) expect(errors[7]!).toBeLessThan(sqErr(w, rcBinarize(w, mask, 10, 12, 1, 7), mask));
    }
  });

  it('BiLLM on a 24×200 weight (blocks of 64, error compensation) equals the reference', async () => {
    const h = hessian();
    const q = get('billm');
    // the float64 frame: to 1e-9
    expect(maxAbsDiff(quantizeColumnBlocks(get('w'), ROWS, COLS, h, BILLM.blockSize,
      (block, r, width, start) => billmBlock(block, r, width, h.inverseDiag, start, BILLM.maxSalient)), q)).toBeLessThan(1e-9);
    // the product (float32 GEMM frame): the same structure, float32 rounding
    const { weight, stats } = await quantizeBillm(Float32Array.from(get('w')), ROWS, COLS, await frame(), BILLM, jsMatmul);
    expect(relDiff(weight, q)).toBeLessThan(1e-4);
    // at least one salient column per block (k ≥ 1), fewer than 50 per block
    expect(stats.salientColumns).toBeGreaterThanOrEqual(4);
    expect(stats.salientColumns).toBeLessThan(3 * 49 + 8);
  });

  it('ARB-LLM_RC on the same weight equals the reference and binarizes it closer than BiLLM', async () => {
    const h = hessian();
    expect(maxAbsDiff(quantizeColumnBlocks(get('w'), ROWS, COLS, h, ARB.blockSize,
      (block, r, width, start) => arbBlock(block, r, width, h.inverseDiag, start, ARB)), get('arb'))).toBeLessThan(1e-9);
    const { weight } = await quantizeArb(Float32Array.from(get('w')), ROWS, COLS, await frame(), ARB, jsMatmul);
    expect(relDiff(weight, get('arb'))).toBeLessThan(1e-4);
    expect(sqErr(get('w'), weight)).toBeLessThan(sqErr(get('w'), get('billm')));
  });
});
