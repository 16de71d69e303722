/**
 * Activation quantizers of the reconstruction: forwards equal the recipe's reference quantizers,
 * parameter gradients equal finite differences of the surrogate each one documents (LSQ for int /
 * levels, the ramp relaxation for the ternary threshold), inputs are straight-through, the
 * magnitude-alignment factor and the stage schedule.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../../../src/linalg/random.js';
import { quantizeRows, roundHalfEven } from '../../../src/quant/quantizers.js';
import { quantBackward, quantForward, sumAbs, type CausalRows, type TrainQuantizer } from '../../../src/quant/reconstruct/act-quant.js';
import { QuantSite } from '../../../src/quant/reconstruct/quant-site.js';
import { buildSchedule, checkLevels, ternaryStages } from '../../../src/quant/reconstruct/schedule.js';
import { dot, randn } from './helpers.js';

const rows = 6;
const cols = 16;

function data(seed: number): { x: Float64Array; g: Float64Array } {
  const rng = new Rng(seed);
  const x = randn(rng, rows * cols);
  for (let i = 0; i < x.length; i += 7) x[i] = x[i]! * 4; // a few outliers
  return { x, g: randn(rng, rows * cols) };
}

describe('reconstruction quantizers: forward', () => {
  it('ternary and int are the recipe quantizers (src/quant/quantizers.ts)', () => {
    const { x } = data(1);
    const x32 = Float32Array.from(x);
    const t = quantForward({ kind: 'ternary' }, 0.7, x32, rows, cols).out;
    const tRef = quantizeRows(x32, cols, { kind: 'ternary', thresholdRatio: 0.7 });
    const i6 = quantForward({ kind: 'int', bits: 6 }, 0.9, x32, rows, cols).out;
    const iRef = quantizeRows(x32, cols, { kind: 'int', bits: 6, clipRatio: 0.9 });
    for (let i = 0; i < x.length; i++) {
      expect(t[i]).toBeCloseTo(tRef[i]!, 5);
      expect(i6[i]).toBeCloseTo(iRef[i]!, 5);
    }
  });

  it('levels 3 has the ternary zero band ±t·mean|x| and step 2Δ', () => {
    const { x } = data(2);
    const out = quantForward({ kind: 'levels', levels: 3 }, 0.7, x, rows, cols).out;
    for (let r = 0; r < rows; r++) {
      const mu = sumAbs(x.subarray(r * cols, (r + 1) * cols)) / cols;
      for (let j = 0; j < cols; j++) {
        const v = x[r * cols + j]!;
        const expected = Math.abs(v) < 0.7 * mu ? 0 : Math.sign(v) * 1.4 * mu;
        expect(out[r * cols + j]).toBeCloseTo(expected, 12);
      }
    }
  });
  it('causal rows (softmax probabilities), whole window: visiting only j ≤ i gives the dense result', () => {
    const seq = 12;
    const rng = new Rng(8);
    const x = new Float64Array(2 * seq * seq);
    for (let r = 0; r < 2 * seq; r++) for (let j = 0; j <= r % seq; j++) x[r * seq + j] = Math.abs(rng.normal());
    const g = randn(rng, x.length);
    const rowsOf: CausalRows = { period: seq, slidingWindow: undefined, unmasked: false };
    for (const q of [{ kind: 'ternary' }, { kind: 'levels', levels: 5 }, { kind: 'int', bits: 4 }] as TrainQuantizer[]) {
      const dense = quantForward(q, 0.9, x, 2 * seq, seq);
      const causal = quantForward(q, 0.9, x, 2 * seq, seq, rowsOf);
      expect(Array.from(causal.out)).toEqual(Array.from(dense.out));
      const dxd = new Float64Array(x.length);
      const dxc = new Float64Array(x.length);
      const pd = quantBackward(q, 0.9, x, g, 2 * seq, seq, dense.rowsInfo, dxd, 1);
      const pc = quantBackward(q, 0.9, x, g, 2 * seq, seq, causal.rowsInfo, dxc, 1, rowsOf);
      expect(pc).toBeCloseTo(pd, 12);
      for (let r = 0; r < 2 * seq; r++) for (let j = 0; j <= r % seq; j++) expect(dxc[r * seq + j]).toBe(dxd[r * seq + j]);
    }
  });

  it('causal rows over the unmasked keys (issue #16): each row as a dense row of its keys lo_i … i', () => {
    const seq = 12;
    const window = 5;
    const rng = new Rng(9);
    const lo = (i: number): number => Math.max(0, i - window + 1);
    const x = new Float64Array(2 * seq * seq);
    for (let r = 0; r < 2 * seq; r++) for (let j = lo(r % seq); j <= r % seq; j++) x[r * seq + j] = Math.abs(rng.normal());
    const g = randn(rng, x.length);
    const rowsOf: CausalRows = { period: seq, slidingWindow: window, unmasked: true };
    for (const q of [{ kind: 'ternary' }, { kind: 'levels', levels: 5 }, { kind: 'int', bits: 4 }] as TrainQuantizer[]) {
      const causal = quantForward(q, 0.9, x, 2 * seq, seq, rowsOf);
      const dx = new Float64Array(x.length);
      const p = quantBackward(q, 0.9, x, g, 2 * seq, seq, causal.rowsInfo, dx, 1, rowsOf);
      let pRows = 0;
      for (let r = 0; r < 2 * seq; r++) {
        const i = r % seq;
        const a = r * seq + lo(i);
        const n = i - lo(i) + 1;
        const xr = x.slice(a, a + n);
        const dense = quantForward(q, 0.9, xr, 1, n);
        for (let j = 0; j < n; j++) expect(causal.out[a + j]).toBe(dense.out[j]);
        for (let j = 0; j < seq; j++) if (j < lo(i) || j > i) expect(causal.out[r * seq + j]).toBe(0);
        const dxr = new Float64Array(n);
        pRows += quantBackward(q, 0.9, xr, g.slice(a, a + n), 1, n, dense.rowsInfo, dxr, 1);
        for (let j = 0; j < n; j++) expect(dx[a + j]).toBe(dxr[j]);
      }
      expect(p).toBeCloseTo(pRows, 12);
    }
  });
});

describe('reconstruction quantizers: gradients', () => {
  const eps = 1e-6;

  it('int clip ratio: LSQ, = d/dc of s(c)·(x/s + const(round(x/s) − x/s)) and ±qmax·s(c) where clamped', () => {
    const { x, g } = data(3);
    const q: TrainQuantizer = { kind: 'int', bits: 3 };
    const c = 0.8;
    const qmax = 3;
    const base = quantForward(q, c, x, rows, cols);
    const dx = new Float64Array(x.length);
    const analytic = quantBackward(q, c, x, g, rows, cols, base.rowsInfo, dx, 1);
    const surrogate = (cc: number): number => {
      let s = 0;
      for (let r = 0; r < rows; r++) {
        const s0 = base.rowsInfo.scale[r]!;
        const sc = (cc * base.rowsInfo.stat[r]!) / qmax;
        for (let j = 0; j < cols; j++) {
          const z = x[r * cols + j]! / s0;
          const qj = z >= qmax ? qmax * sc : z <= -qmax ? -qmax * sc : x[r * cols + j]! + sc * (roundHalfEven(z) - z);
          s += g[r * cols + j]! * qj;
        }
      }
      return s;
    };
    expect(analytic).toBeCloseTo((surrogate(c + eps) - surrogate(c - eps)) / (2 * eps), 6);
    // straight-through input gradient, zero where clamped
    let clamped = 0;
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < cols; j++) {
        const i = r * cols + j;
        const z = x[i]! / base.rowsInfo.scale[r]!;
        const inside = z > -qmax && z < qmax;
        if (!inside) clamped++;
        expect(dx[i]).toBe(inside ? g[i] : 0);
      }
    }
    expect(clamped).toBeGreaterThan(0);
  });

  it('levels threshold ratio: LSQ through u = 6·t·mean|x|/L', () => {
    const { x, g } = data(4);
    const q: TrainQuantizer = { kind: 'levels', levels: 7 };
    const t = 0.6;
    const qmax = 3;
    const base = quantForward(q, t, x, rows, cols);
    const analytic = quantBackward(q, t, x, g, rows, cols, base.rowsInfo, new Float64Array(x.length), 1);
    const surrogate = (tt: number): number => {
      let s = 0;
      for (let r = 0; r < rows; r++) {
        const u0 = base.rowsInfo.scale[r]!;
        const u = (6 * tt * base.rowsInfo.stat[r]!) / 7;
        for (let j = 0; j < cols; j++) {
          const z = x[r * cols + j]! / u0;
          const qj = z >= qmax ? qmax * u : z <= -qmax ? -qmax * u : x[r * cols + j]! + u * (Math.round(z) - z);
          s += g[r * cols + j]! * qj;
        }
      }
      return s;
    };
    expect(analytic).toBeCloseTo((surrogate(t + eps) - surrogate(t - eps)) / (2 * eps), 6);
  });

  it('ternary threshold ratio: derivative of the ramp relaxation; input straight-through', () => {
    const { x, g } = data(5);
    const q: TrainQuantizer = { kind: 'ternary' };
    const t = 0.7;
    const base = quantForward(q, t, x, rows, cols);
    const dx = new Float64Array(x.length);
    const analytic = quantBackward(q, t, x, g, rows, cols, base.rowsInfo, dx, 1);
    expect(Array.from(dx)).toEqual(Array.from(g));
    const relaxed = (tt: number): number => {
      let s = 0;
      for (let r = 0; r < rows; r++) {
        const mu = base.rowsInfo.stat[r]!;
        const sc = base.rowsInfo.scale[r]!;
        const w = Math.max(t * mu, 0.05 * mu);
        const delta = tt * mu;
        for (let j = 0; j < cols; j++) {
          const v = x[r * cols + j]!;
          const ramp = Math.min(1, Math.max(0, (Math.abs(v) - delta) / w + 0.5));
          s += g[r * cols + j]! * sc * Math.sign(v) * ramp;
        }
      }
      return s;
    };
    const numeric = (relaxed(t + eps) - relaxed(t - eps)) / (2 * eps);
    expect(Math.abs(analytic)).toBeGreaterThan(0);
    expect(analytic).toBeCloseTo(numeric, 6);
  });
});

describe('quantizer sites', () => {
  it('magnitude alignment: every stage\'s output has the final quantizer\'s Σ|q(x)| on its entry minibatch', () => {
    const { x } = data(6);
    const site = new QuantSite('s', ternaryStages([9, 5]), 0.7, true);
    const last = sumAbs(quantForward({ kind: 'ternary' }, 0.7, x, rows, cols).out);
    for (const stage of [1, 2, 3]) {
      const { out } = site.forward(x, rows, cols, { stage, lambda: 1 });
      expect(sumAbs(out) / last).toBeCloseTo(1, 10);
    }
    // consecutive stages: p_i / p_{i+1} = Σ|q_{i+1}(x)| / Σ|q_i(x)|, anchored at p_last = 1
    const l9 = sumAbs(quantForward({ kind: 'levels', levels: 9 }, 0.7, x, rows, cols).out);
    const l5 = sumAbs(quantForward({ kind: 'levels', levels: 5 }, 0.7, x, rows, cols).out);
    expect(site.p[3]).toBe(1);
    expect(site.p[1]! / site.p[2]!).toBeCloseTo(l5 / l9, 10);
    expect(site.p[1]).not.toBeCloseTo(1, 2);
    // without alignment the stage output is the plain quantizer
    const plain = new QuantSite('s', ternaryStages([9, 5]), 0.7, false);
    expect(sumAbs(plain.forward(x, rows, cols, { stage: 1, lambda: 1 }).out)).toBeCloseTo(l9, 10);
  });

  it('hand-over blends the two stages and splits the gradient between them', () => {
    const { x, g } = data(7);
    const site = new QuantSite('s', ternaryStages([5]), 0.7, false);
    const lambda = 0.25;
    const { out, cache } = site.forward(x, rows, cols, { stage: 2, lambda });
    const a = quantForward({ kind: 'ternary' }, 0.7, x, rows, cols).out;
    const b = quantForward({ kind: 'levels', levels: 5 }, 0.7, x, rows, cols).out;
    for (let i = 0; i < x.length; i++) expect(out[i]).toBeCloseTo(lambda * a[i]! + (1 - lambda) * b[i]!, 12);
    site.grad = 0;
    site.backward(x, g, cache);
    const ga = quantBackward({ kind: 'ternary' }, 0.7, x, g, rows, cols, quantForward({ kind: 'ternary' }, 0.7, x, rows, cols).rowsInfo, new Float64Array(x.length), lambda);
    const gb = quantBackward({ kind: 'levels', levels: 5 }, 0.7, x, g, rows, cols, quantForward({ kind: 'levels', levels: 5 }, 0.7, x, rows, cols).rowsInfo, new Float64Array(x.length), 1 - lambda);
    expect(site.grad).toBeCloseTo(ga + gb, 10);
    expect(dot(g, g)).toBeGreaterThan(0);
  });
});

describe('smooth multi-stage schedule', () => {
  it('float stage gets no step, the final stage its fraction, the levels stages the rest; λ ramps over the hand-over', () => {
    const s = buildSchedule(5, 100, 0.5, 0.5); // float, 3 levels stages, ternary
    expect(s.lengths).toEqual([0, 17, 17, 16, 50]);
    expect(s.at(0)).toEqual({ stage: 1, lambda: 1 / 9 });
    expect(s.at(8)).toEqual({ stage: 1, lambda: 1 });
    expect(s.at(17)).toEqual({ stage: 2, lambda: 1 / 9 });
    expect(s.at(50)).toEqual({ stage: 4, lambda: 1 / 25 });
    expect(s.at(99)).toEqual({ stage: 4, lambda: 1 });
    expect(buildSchedule(1, 10, 0.5, 0.5).at(3)).toEqual({ stage: 0, lambda: 1 });
  });

  it('stage levels are odd, ≥ 3 and decreasing', () => {
    expect(checkLevels([9, 7, 5])).toBeUndefined();
    expect(checkLevels([8])).toMatch(/odd/);
    expect(checkLevels([5, 7])).toMatch(/decrease/);
    expect(ternaryStages([]).map((q) => q.kind)).toEqual(['ternary']);
  });
});
