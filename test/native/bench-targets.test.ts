// The targets computed from the H100 run recorded in native/test/results/h100-gpu-bench-v12.json
// (the kernels the automatic choice runs; the file also holds comparison kernels) and from synthetic CPU rows.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { benchTargets, type CpuBenchRow, type GpuBenchRow } from '../../src/cli/commands/bench.js';
import { PACKAGE_ROOT } from '../../src/package-paths.js';

interface DriverRow {
  op: string; kernel: string; m: number; k: number; n: number; msOurs: number; msCublasFp16: number; speedup: number;
  msOursGraph: number; msCublasGraph: number; speedupGraph: number; checked: number; mismatches: number;
  weights: 'warm' | 'cold';
}

// The automatic choice on an H100 (the file also holds comparison kernels: the plain GEMV tb_gemv at M = 1, and
// at M >= 512 tb_wgmma with int32 output, the mma.sync kernels tb_mma_b1 and i8_mma_s8).
const AUTOMATIC = new Set(['tb_gemv_pdl', 'tb_mma_skinny', 'tb_wgmma_o16', 'i8_gemv_dp4a', 'i8_mma_skinny', 'i8_wgmma']);

function h100Rows(): GpuBenchRow[] {
  const file = join(PACKAGE_ROOT, 'native', 'test', 'results', 'h100-gpu-bench-v12.json');
  const rows = JSON.parse(readFileSync(file, 'utf8')) as DriverRow[];
  return rows.filter((r) => AUTOMATIC.has(r.kernel)).map((r) => ({
    op: r.op === 'ternary_binary' ? 'ternary-binary' as const : 'int8-binary' as const, kernel: r.kernel,
    m: r.m, k: r.k, n: r.n, msOurs: r.msOurs, msCublasFp16: r.msCublasFp16, speedup: r.speedup,
    checked: r.checked === 1, mismatches: r.mismatches,
    msOursGraph: r.msOursGraph, msCublasFp16Graph: r.msCublasGraph, speedupGraph: r.speedupGraph, weights: r.weights,
  }));
}

const cpuRow = (m: number, n: number, speedup: number): CpuBenchRow => ({
  m, k: 4096, n, msTernaryBinary: 1, msInt8Binary: 1, msOrtFp32: speedup, speedupTernaryBinary: speedup,
  speedupInt8Binary: speedup, agrees: true,
});

describe('benchTargets', () => {
  it('takes the minimum over the shapes, with stream and with CUDA-graph timing, warm and cold weights (H100 run v12)', () => {
    const gpu = h100Rows();
    const perShape = ['1:tb_gemv_pdl:warm', '1:tb_gemv_pdl:cold', '16:tb_mma_skinny:warm', '512:tb_wgmma_o16:warm',
      '2048:tb_wgmma_o16:warm'];
    expect(gpu.filter((r) => r.op === 'ternary-binary').map((r) => `${r.m}:${r.kernel}:${r.weights}`))
      .toEqual([...perShape, ...perShape, ...perShape]);
    // int8 x binary at M = 2048: the Hopper kernel i8_wgmma, faster than cuBLAS FP16 on every shape.
    const int8Large = gpu.filter((r) => r.op === 'int8-binary' && r.m === 2048);
    expect(int8Large.map((r) => [r.kernel, r.speedup])).toEqual([['i8_wgmma', 1.43], ['i8_wgmma', 1.58], ['i8_wgmma', 1.51]]);
    const cpu = [cpuRow(1, 4096, 21.8), cpuRow(1, 11008, 42.7), cpuRow(16, 4096, 13.4)];
    const t = benchTargets(cpu, gpu);
    expect(t.map((x) => [x.target, x.value, x.met])).toEqual([
      [8, 21.8, true],
      [10, 9.68, false], // 4096² (15.24 and 12.67 for the other shapes; stream timing follows the host's launches)
      [4, 4.91, true], // 4096² (5.55, 6.03)
      [10, 7.31, false], // 4096² (17.81, 17.45)
      [4, 5.13, true], // 4096² (5.75, 6.28)
      [10, 6.95, false], // cold weights, 4096² (12.45, 10.80)
      [10, 10.42, true], // cold weights, graphs: 4096² (12.70, 12.43)
    ]);
  });

  it('reports a target without rows as not measured, and ignores int8 rows and unmeasured graph timings', () => {
    const gpu = h100Rows().map((r) => ({ ...r, speedupGraph: 0 }));
    const t = benchTargets([], gpu.filter((r) => r.op === 'int8-binary'));
    expect(t.every((x) => x.value === undefined && x.met === undefined)).toBe(true);
    const s = benchTargets([], gpu);
    expect(s[2]?.value).toBe(4.91);
    expect(s[4]?.value).toBeUndefined();
    expect(s[5]?.value).toBe(6.95);
    expect(s[6]?.value).toBeUndefined();
    // Without cold rows the cold targets are not measured, and cold rows never count as warm ones.
    const warmOnly = benchTargets([], h100Rows().filter((r) => r.weights === 'warm'));
    expect([warmOnly[5]?.value, warmOnly[6]?.value]).toEqual([undefined, undefined]);
    const coldOnly = benchTargets([], h100Rows().filter((r) => r.weights === 'cold'));
    expect([coldOnly[1]?.value, coldOnly[3]?.value, coldOnly[6]?.value]).toEqual([undefined, undefined, 10.42]);
  });
});
