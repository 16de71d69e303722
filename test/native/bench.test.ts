// Cross-check of the native kernels against onnxruntime's fp32 GEMM (exact on ±1 / ternary / small-int
// operands), and a smoke run of `bwq bench` (M = 1 only, no eval, no GPU).
import { afterAll, describe, expect, it } from 'vitest';
import { loadNativeKernels } from '../../src/native/kernels.js';
import { ortMatmul, releaseOrtMatmul } from '../../src/onnx/ort-matmul.js';
import { packSignRows, packTernaryRows } from '../../src/quant/pack.js';
import { runBench } from '../../src/cli/commands/bench.js';

afterAll(async () => {
  await releaseOrtMatmul();
});

describe('native kernels vs onnxruntime', () => {
  it('ternary×binary and int8×binary equal ORT fp32 Gemm(transB) exactly', async () => {
    const m = 9, n = 45, k = 515;
    let s = 77;
    const next = () => { s = (s * 1103515245 + 12345) >>> 0; return s >>> 8; };
    const t = new Int8Array(m * k).map(() => (next() % 3) - 1);
    const a = new Int8Array(m * k).map(() => (next() % 63) - 31);
    const b = new Int8Array(n * k).map(() => (next() & 1 ? 1 : -1));
    const w = packSignRows(b, n, k);
    const { plus, minus } = packTernaryRows(t, m, k);
    const kernels = loadNativeKernels({ device: 'cpu' });
    const bf = Float32Array.from(b);
    const yt = await ortMatmul(Float32Array.from(t), bf, m, k, n, { transposeB: true });
    expect(Array.from(kernels.ternaryBinaryGemm(plus, minus, w, m, n, k))).toEqual(Array.from(yt));
    const ya = await ortMatmul(Float32Array.from(a), bf, m, k, n, { transposeB: true });
    expect(Array.from(kernels.int8BinaryGemm(a, w, m, n, k))).toEqual(Array.from(ya));
  });

  it('bwq bench (M=1) reports agreeing results and a speedup for every shape', async () => {
    const lines: string[] = [];
    const report = await runBench({ m: '1', eval: false, gpu: false }, (l) => lines.push(l));
    expect(report.cpu.map((r) => [r.m, r.k, r.n])).toEqual([[1, 4096, 4096], [1, 4096, 11008], [1, 11008, 4096]]);
    for (const r of report.cpu) {
      expect(r.agrees).toBe(true);
      expect(r.msTernaryBinary).toBeGreaterThan(0);
      expect(r.speedupTernaryBinary).toBeGreaterThan(1);
    }
    expect(report.gpu).toEqual([]);
    expect(report.targets[0]?.value).toBeCloseTo(Math.min(...report.cpu.map((r) => r.speedupTernaryBinary)), 10);
    expect(lines.some((l) => l.startsWith('target CPU M=1'))).toBe(true);
  });
});
