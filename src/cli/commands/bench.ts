/**
 * `bwq bench`: kernel throughput and speedups measured in one run.
 *  - CPU: packed ternary×binary (and int8×binary) GEMM of the native addon vs onnxruntime fp32 MatMul.
 *  - GPU (when CUDA is available): our CUDA kernels vs cuBLAS FP16 GEMM, timed inside libbwq_cuda.so.
 *  - Eval tokens/s of the bundled model (src/eval/benchmark.js), when that module is present.
 */
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Command } from 'commander';
import { BwqError, usageError } from '../../errors.js';
import { loadNativeKernels, nativeCpuInfo, nativeCudaBench, setNativeThreads } from '../../native/kernels.js';
import { loadAddon } from '../../native/loader.js';
import { Rng } from '../../linalg/random.js';
import { packSignRows, packTernaryRows } from '../../quant/pack.js';
import { BENCH_CONFIGS, formatE2e, runE2eBench, type E2eOptions } from '../../bench/e2e.js';
import { formatQuantizeBench, runQuantizeBench, type QuantizeBenchOptions } from '../../bench/quantize.js';
import { createProgress } from '../progress.js';
import { parseQuantizeOptions } from './quantize.js';
import { RECONSTRUCT_FLAG_HELP as REC } from '../reconstruct-flags.js';
import { RANDOM_VARIANTS, type RandomVariant } from '../../runtime/random-model.js';
import type { RuntimeDevice } from '../../runtime/session.js';
import { parseIntegerFlag } from '../output.js';

export const BENCH_SHAPES: ReadonlyArray<{ k: number; n: number }> = [
  { k: 4096, n: 4096 }, { k: 4096, n: 11008 }, { k: 11008, n: 4096 },
];
export const BENCH_MS = [1, 16, 512, 2048] as const;
export const QUICK_MS = [1, 16] as const;

export interface CpuBenchRow {
  m: number; k: number; n: number;
  msTernaryBinary: number; msInt8Binary: number; msOrtFp32: number;
  speedupTernaryBinary: number; speedupInt8Binary: number;
  /** sampled outputs of our kernel equal ORT's fp32 result on the same ±1 / ternary values */
  agrees: boolean;
}
export interface GpuBenchRow {
  op: 'ternary-binary' | 'int8-binary'; kernel: string; m: number; k: number; n: number;
  msOurs: number; msCublasFp16: number; speedup: number; checked: boolean; mismatches: number;
  /** both sides replayed from a CUDA graph (launch overhead removed on both); 0 when not measured */
  msOursGraph: number; msCublasFp16Graph: number; speedupGraph: number;
  /** 'warm': every call reuses one copy of the weights (cuBLAS's FP16 weights then partly stay in the L2);
   *  'cold': the calls rotate over copies larger than the L2, both sides, as a model's layers do in decoding */
  weights: 'warm' | 'cold';
}
export interface BenchReport {
  date: string;
  machine: { cpu: string; cores: number; cpuPath: string; threads: number; gpu: string | undefined; notice: string | undefined };
  cpu: CpuBenchRow[];
  gpu: GpuBenchRow[];
  eval: { tokensPerSecond: number; seqlen: number; windows: number; tokens: number } | { skipped: string };
  targets: { name: string; value: number | undefined; target: number; met: boolean | undefined }[];
}

interface BenchOptions { quick?: boolean; json?: boolean; threads?: string; gpu?: boolean; cpu?: boolean; eval?: boolean; m?: string }

/** Mean ms per call: one warm-up call, then at least `minReps` calls and until `minMs` has passed. */
async function timeCalls(fn: () => unknown, minReps: number, minMs: number, maxReps = 1000): Promise<number> {
  await fn();
  let reps = 0;
  const t0 = performance.now();
  while (reps < minReps || (performance.now() - t0 < minMs && reps < maxReps)) {
    await fn();
    reps++;
  }
  return (performance.now() - t0) / reps;
}

async function cpuBench(ms: readonly number[], quick: boolean, log: (s: string) => void): Promise<CpuBenchRow[]> {
  const { ortMatmul } = await import('../../onnx/ort-matmul.js');
  const kernels = loadNativeKernels({ device: 'cpu' });
  const rows: CpuBenchRow[] = [];
  const rng = new Rng(2024);
  for (const { k, n } of BENCH_SHAPES) {
    // Weights: random signs, packed and as fp32 [N,K] for ORT (Gemm with transB).
    const signs = new Int8Array(n * k);
    for (let i = 0; i < signs.length; i++) signs[i] = rng.nextUint32() & 1 ? 1 : -1;
    const w = packSignRows(signs, n, k);
    const bf = Float32Array.from(signs);
    for (const m of ms) {
      const t = new Int8Array(m * k);
      for (let i = 0; i < t.length; i++) t[i] = (rng.nextUint32() % 3) - 1;
      const { plus, minus } = packTernaryRows(t, m, k);
      const af = Float32Array.from(t);
      const a8 = Int8Array.from(t, (v) => v * 17);
      const out = new Int32Array(m * n);
      const big = m >= 512;
      const minMs = quick ? 200 : 500;
      const msTb = await timeCalls(() => kernels.ternaryBinaryGemm(plus, minus, w, m, n, k, out), big ? 2 : 5, minMs);
      const tb = Int32Array.from(out);
      const msI8 = await timeCalls(() => kernels.int8BinaryGemm(a8, w, m, n, k, out), big ? 2 : 5, minMs);
      let ortOut: Float32Array = new Float32Array(0);
      const msOrt = await timeCalls(async () => { ortOut = await ortMatmul(af, bf, m, k, n, { transposeB: true }); },
        big ? 1 : 3, big ? 0 : minMs);
      let agrees = true;
      for (let s = 0; s < 64; s++) {
        const idx = rng.nextUint32() % (m * n);
        if (tb[idx] !== ortOut[idx]) agrees = false;
      }
      const row: CpuBenchRow = { m, k, n, msTernaryBinary: msTb, msInt8Binary: msI8, msOrtFp32: msOrt,
        speedupTernaryBinary: msOrt / msTb, speedupInt8Binary: msOrt / msI8, agrees };
      rows.push(row);
      log(`cpu  M=${String(m).padEnd(5)} K=${String(k).padEnd(6)} N=${String(n).padEnd(6)} ` +
        `ternary×binary ${msTb.toFixed(3).padStart(9)} ms  int8×binary ${msI8.toFixed(3).padStart(9)} ms  ` +
        `ORT fp32 ${msOrt.toFixed(3).padStart(9)} ms  speedup ${(msOrt / msTb).toFixed(2).padStart(7)}× / ` +
        `${(msOrt / msI8).toFixed(2).padStart(6)}×${agrees ? '' : '  RESULT MISMATCH'}`);
    }
  }
  return rows;
}

function gpuBench(ms: readonly number[], log: (s: string) => void): GpuBenchRow[] {
  const rows: GpuBenchRow[] = [];
  for (const op of ['ternary-binary', 'int8-binary'] as const) {
    for (const { k, n } of BENCH_SHAPES) {
      // M = 1 (decoding) also with cold weights: each layer of a model has its own weights, read from memory.
      const runs = ms.flatMap((m) => (op === 'ternary-binary' && m === 1 ? [[m, false], [m, true]] : [[m, false]]) as [number, boolean][]);
      for (const [m, cold] of runs) {
        const r = nativeCudaBench(op, m, n, k, 10, m >= 512 ? 50 : 200, cold);
        const speedup = r.msCublas > 0 ? r.msCublas / r.msOurs : 0;
        const speedupGraph = r.msCublasGraph > 0 && r.msOursGraph > 0 ? r.msCublasGraph / r.msOursGraph : 0;
        rows.push({ op, kernel: r.kernel, m, k, n, msOurs: r.msOurs, msCublasFp16: r.msCublas, speedup,
          checked: r.checked, mismatches: r.mismatches,
          msOursGraph: r.msOursGraph, msCublasFp16Graph: r.msCublasGraph, speedupGraph, weights: cold ? 'cold' : 'warm' });
        log(`gpu  ${op.padEnd(14)} ${r.kernel.padEnd(13)} M=${String(m).padEnd(5)} K=${String(k).padEnd(6)} ` +
          `N=${String(n).padEnd(6)} ours ${r.msOurs.toFixed(4)} ms  cuBLAS fp16 ${r.cublas ? r.msCublas.toFixed(4) + ' ms' : 'n/a'}` +
          `  speedup ${speedup.toFixed(2)}×  graph ${speedupGraph.toFixed(2)}×${cold ? '  (cold weights)' : ''}` +
          `${r.mismatches > 0 ? '  MISMATCH' : ''}`);
      }
    }
  }
  return rows;
}

export type BenchTarget = BenchReport['targets'][number];

/**
 * The issue's targets from the measured rows: the minimum speedup over the shapes for CPU M = 1 (≥ 8×),
 * GPU M = 1 (≥ 10×) and GPU M = 2048 (≥ 4×), the GPU ones with stream and with CUDA-graph timing, with warm
 * weights, and GPU M = 1 also with cold weights (appended last). A target without rows is `undefined` (not
 * measured).
 */
export function benchTargets(cpu: readonly CpuBenchRow[], gpu: readonly GpuBenchRow[]): BenchTarget[] {
  const measured = gpu.filter((r) => r.op === 'ternary-binary' && r.speedup > 0);
  const tb = measured.filter((r) => r.weights === 'warm');
  const graph = tb.filter((r) => r.speedupGraph > 0);
  const cold = measured.filter((r) => r.weights === 'cold' && r.m === 1);
  const target = (name: string, value: number | undefined, t: number): BenchTarget =>
    ({ name, value, target: t, met: value === undefined ? undefined : value >= t });
  return [
    target('CPU M=1 ternary×binary vs ORT fp32 (min over shapes)',
      minOf(cpu.filter((r) => r.m === 1).map((r) => r.speedupTernaryBinary)), 8),
    target('GPU M=1 ternary×binary vs cuBLAS FP16, warm weights (min over shapes)',
      minOf(tb.filter((r) => r.m === 1).map((r) => r.speedup)), 10),
    target('GPU M=2048 ternary×binary vs cuBLAS FP16 (min over shapes)',
      minOf(tb.filter((r) => r.m === 2048).map((r) => r.speedup)), 4),
    target('GPU M=1, warm weights, both sides from CUDA graphs (min over shapes)',
      minOf(graph.filter((r) => r.m === 1).map((r) => r.speedupGraph)), 10),
    target('GPU M=2048, both sides from CUDA graphs (min over shapes)',
      minOf(graph.filter((r) => r.m === 2048).map((r) => r.speedupGraph)), 4),
    target('GPU M=1 with cold weights, as in decoding (min over shapes)', minOf(cold.map((r) => r.speedup)), 10),
    target('GPU M=1 with cold weights, both sides from CUDA graphs (min over shapes)',
      minOf(cold.filter((r) => r.speedupGraph > 0).map((r) => r.speedupGraph)), 10),
  ];
}

function minOf(values: number[]): number | undefined {
  return values.length === 0 ? undefined : Math.min(...values);
}

export async function runBench(options: BenchOptions, log: (s: string) => void): Promise<BenchReport> {
  const quick = options.quick === true;
  let ms: number[] = quick ? [...QUICK_MS] : [...BENCH_MS];
  if (options.m !== undefined) {
    ms = options.m.split(',').map((s) => Number(s.trim()));
    if (ms.some((v) => !Number.isInteger(v) || v < 1)) throw usageError(`--m expects positive integers, got "${options.m}"`);
  }
  if (options.threads !== undefined) {
    const t = Number(options.threads);
    if (!Number.isInteger(t) || t < 1) throw usageError(`--threads expects a positive integer, got "${options.threads}"`);
    setNativeThreads(t);
  }
  const auto = loadNativeKernels({ device: options.gpu === false ? 'cpu' : 'auto' });
  if (auto.notice !== undefined) process.stderr.write(`${auto.notice}\n`);
  const info = nativeCpuInfo();
  const cuda = auto.gpu ? loadAddon().cudaInit() : undefined;
  const report: BenchReport = {
    date: new Date().toISOString(),
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, cpuPath: info.level, threads: info.threads,
      gpu: cuda?.message, notice: auto.notice },
    cpu: [], gpu: [], eval: { skipped: 'disabled' }, targets: [],
  };
  log(`bwq bench ${report.date}  CPU: ${report.machine.cpu} (${report.machine.cores} cores, ${info.level}, ${info.threads} threads)` +
    `${cuda ? `  GPU: ${cuda.message}` : ''}`);
  if (options.cpu !== false) report.cpu = await cpuBench(ms, quick, log);
  if (auto.gpu) report.gpu = gpuBench(ms, log);
  if (options.eval !== false) {
    try {
      const mod = (await import('../../eval/benchmark.js')) as {
        benchmarkEval?: (o: { windows?: number; seqlen?: number }) => Promise<{ tokensPerSecond: number; seqlen: number; windows: number; tokens: number }>;
      };
      if (typeof mod.benchmarkEval !== 'function') {
        report.eval = { skipped: 'src/eval/benchmark.js has no benchmarkEval' };
      } else {
        const e = await mod.benchmarkEval(quick ? { windows: 2, seqlen: 256 } : { windows: 8 });
        report.eval = { tokensPerSecond: e.tokensPerSecond, seqlen: e.seqlen, windows: e.windows, tokens: e.tokens };
        log(`eval ${e.tokens} tokens (seqlen ${e.seqlen}, ${e.windows} windows): ${e.tokensPerSecond.toFixed(1)} tokens/s`);
      }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      report.eval = { skipped: `eval benchmark unavailable: ${message.split('\n')[0]}` };
      log(`eval skipped: ${message.split('\n')[0]}`);
    }
  }
  report.targets = benchTargets(report.cpu, report.gpu);
  for (const t of report.targets) {
    log(`target ${t.name}: ${t.value === undefined ? 'not measured' : `${t.value.toFixed(2)}× (target ${t.target}×) ${t.met ? 'met' : 'MISSED'}`}`);
  }
  return report;
}

interface E2eFlags {
  e2e?: boolean; config?: string; device?: string; variants?: string; prefill?: string; prompt?: string; steps?: string;
  batches?: string;
}
interface QuantizeBenchFlags {
  quantize?: boolean; layers?: string; method?: string; nsamples?: string; seqlen?: string;
  /** block-wise reconstruction, as quantize's flags (bwta: on unless --no-reconstruct) */
  reconstruct?: boolean; recIterations?: string; recBatch?: string;
}

function intList(flag: string, value: string): number[] {
  const list = value.split(',').map((v) => parseIntegerFlag(flag, v.trim(), 1));
  if (list.length === 0) throw usageError(`${flag} needs at least one value`);
  return list;
}

/** The --e2e flags as E2eOptions (usage errors for bad values). */
export function e2eOptions(f: E2eFlags, log: (line: string) => void): E2eOptions {
  const device = (f.device ?? 'auto') as RuntimeDevice;
  if (!['auto', 'cuda', 'cpu'].includes(device)) throw usageError(`--device must be one of auto, cuda, cpu, got "${f.device}"`);
  const variants = (f.variants ?? RANDOM_VARIANTS.join(',')).split(',').map((v) => v.trim()) as RandomVariant[];
  for (const v of variants) if (!RANDOM_VARIANTS.includes(v)) throw usageError(`--variants: unknown variant "${v}" (${RANDOM_VARIANTS.join(', ')})`);
  return {
    device, variants,
    prefill: f.prefill === undefined ? 2048 : parseIntegerFlag('--prefill', f.prefill, 1),
    prompt: f.prompt === undefined ? 512 : parseIntegerFlag('--prompt', f.prompt, 1),
    steps: f.steps === undefined ? 128 : parseIntegerFlag('--steps', f.steps, 1),
    batches: f.batches === undefined ? [1, 16] : intList('--batches', f.batches),
    repeats: 2,
    log,
  };
}

/** The --quantize flags as QuantizeBenchOptions: the run is parsed as `bwq quantize` parses it (its defaults, the
 *  method's activation bits and reconstruction, usage errors), with the bench's own temporary OUT_DIR. */
export function quantizeBenchOptions(f: QuantizeBenchFlags & E2eFlags & { threads?: string; json?: boolean }): QuantizeBenchOptions {
  const quantize = parseQuantizeOptions(undefined, {
    output: 'bench-quantize-output', method: f.method ?? 'bwla', nsamples: f.nsamples, seqlen: f.seqlen,
    threads: f.threads, device: f.device ?? 'auto',
    reconstruct: f.reconstruct, recIterations: f.recIterations, recBatch: f.recBatch,
  });
  return {
    quantize,
    layers: f.layers === undefined ? 2 : parseIntegerFlag('--layers', f.layers, 1),
    progress: createProgress({ stream: process.stderr }),
  };
}

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('kernel throughput: packed CPU kernels vs onnxruntime fp32, CUDA kernels vs cuBLAS FP16, eval tokens/s')
    .option('--quick', `CI-friendly run: M in {${QUICK_MS.join(', ')}} instead of {${BENCH_MS.join(', ')}}`)
    .option('--m <list>', 'comma-separated M values (overrides --quick)')
    .option('--threads <n>', 'CPU threads for our kernels (default: hardware concurrency)')
    .option('--no-gpu', 'skip the CUDA benchmark even when a GPU is present')
    .option('--no-cpu', 'skip the CPU benchmark')
    .option('--no-eval', 'skip the eval tokens/s benchmark')
    .option('--e2e', 'end-to-end forwards in the runtime instead: FP16 against BWLA W1A6 and BWTA packed, random weights')
    .option('--config <NAME|PATH>', `for --e2e and --quantize: ${BENCH_CONFIGS.join(', ')} or a config.json (default llama-2-7b)`)
    .option('--device <NAME>', 'for --e2e and --quantize: auto (default), cuda or cpu')
    .option('--variants <list>', `for --e2e: comma-separated of ${RANDOM_VARIANTS.join(', ')} (default all)`)
    .option('--prefill <n>', 'for --e2e: prefill tokens at batch 1 (default 2048)')
    .option('--prompt <n>', 'for --e2e: prompt tokens before decoding (default 512)')
    .option('--steps <n>', 'for --e2e: decoded tokens per sequence (default 128)')
    .option('--batches <list>', 'for --e2e: decode batch sizes (default 1,16)')
    .option('--quantize', 'time `bwq quantize` per block on random weights from --config and project the whole model')
    .option('--layers <n>', 'for --quantize: blocks quantized (default 2)')
    .option('--method <name>', 'for --quantize: bwla (default), bwta or rtn')
    .option('--nsamples <n>', "for --quantize: calibration windows (default: quantize's for the device)")
    .option('--seqlen <n>', "for --quantize: calibration window length (default: quantize's for the device)")
    .option('--reconstruct', 'for --quantize: block-wise reconstruction (default for bwta), timed per block')
    .option('--no-reconstruct', 'for --quantize: no block-wise reconstruction')
    .option('--rec-iterations <n>', `for --quantize: ${REC.iterations}`)
    .option('--rec-batch <n>', `for --quantize: ${REC.batch}`)
    .option('--json', 'print one JSON report on stdout')
    .action(async (options: BenchOptions & E2eFlags & QuantizeBenchFlags) => {
      const json = options.json === true;
      const log = (s: string) => (json ? process.stderr : process.stdout).write(`${s}\n`);
      if (options.quantize === true) {
        const report = await runQuantizeBench(options.config ?? 'llama-2-7b', quantizeBenchOptions(options));
        if (json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        else log(formatQuantizeBench(report));
        return;
      }
      if (options.e2e === true) {
        const report = await runE2eBench(options.config ?? 'llama-2-7b', e2eOptions(options, (line) => process.stderr.write(`${line}\n`)));
        if (json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        else log(formatE2e(report));
        return;
      }
      const report = await runBench(options, log);
      const bad = report.cpu.some((r) => !r.agrees) || report.gpu.some((r) => r.mismatches > 0);
      // one JSON object on stdout: the report, or (with the rows on stderr) the error
      if (json && !bad) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      if (bad) throw new BwqError('bench: a kernel result disagreed with its reference (see output above)');
    });
}
