/**
 * Typed access to the native packed kernels (native/, docs/KERNELS.md).
 *
 * Layouts: binary weights B[N,K] as Uint32 words [N, ceil(K/32)], bit j of word w = 1 iff B[n,32w+j] = +1
 * (LSB first, padding bits 0); ternary operands as two bit-planes (plus, minus) in the same layout;
 * int8 codes row-major [M,K]. All results are exact int32 sums.
 */
import { BwqError } from '../errors.js';
import { loadAddon, type CudaBenchRaw, type NativeAddon, type ResidentWeightsHandle } from './loader.js';

export interface NativeKernels {
  readonly backend: 'cpu' | 'cuda'; readonly cpuFeatures: string;   // e.g. 'avx512' | 'avx2' | 'scalar'
  /** Y[M,N] (F32) = (Σ_k t[m,k]·B[n,k]) as exact integers; t ternary given as plus/minus bit-planes [M, ceil(K/32)] */
  ternaryBinaryGemm(plus: Uint32Array, minus: Uint32Array, weights: Uint32Array, m: number, n: number, k: number, out?: Int32Array): Int32Array;
  /** Y[M,N] int32 = Σ_k a[m,k]·B[n,k], a int8 codes [M,K] */
  int8BinaryGemm(a: Int8Array, weights: Uint32Array, m: number, n: number, k: number, out?: Int32Array): Int32Array;
  /** ternary × ternary (attention scores): Y[M,N] = Σ_k t1[m,k]·t2[n,k]; on CUDA one ternary × binary GEMM against 2N binary rows */
  ternaryTernaryGemm(aPlus: Uint32Array, aMinus: Uint32Array, bPlus: Uint32Array, bMinus: Uint32Array, m: number, n: number, k: number, out?: Int32Array): Int32Array;
  /** true if a CUDA device is used */ readonly gpu: boolean; readonly notice: string | undefined;
  /**
   * true when CUDA calls keep each weights array's GPU copy (loadNativeKernels `residentWeights`): the first
   * call with an array uploads it, later calls with the same array object reuse the copy.
   */
  readonly residentWeights: boolean;
}

export type NativeDevice = 'auto' | 'cpu' | 'cuda';

function checkDims(m: number, n: number, k: number): void {
  for (const [name, v] of [['m', m], ['n', n], ['k', k]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
      throw new BwqError(`native kernel: ${name} must be a non-negative integer, got ${v}`);
    }
  }
  if (m * n > 0x7fffffff) throw new BwqError(`native kernel: output ${m}x${n} is too large`);
}

function checkLength(what: string, arr: ArrayLike<number>, need: number): void {
  if (arr.length < need) throw new BwqError(`native kernel: ${what} has ${arr.length} elements, needs ${need}`);
}

function outBuffer(out: Int32Array | undefined, m: number, n: number): Int32Array {
  if (out === undefined) return new Int32Array(m * n);
  checkLength('out', out, m * n);
  return out;
}

class Kernels implements NativeKernels {
  readonly backend: 'cpu' | 'cuda';
  readonly gpu: boolean;
  readonly notice: string | undefined;
  readonly residentWeights: boolean;
  /** GPU copies by weights array (residentWeights); a copy is freed when its array is garbage-collected */
  private readonly resident = new WeakMap<Uint32Array, { handle: ResidentWeightsHandle; n: number; k: number }>();
  constructor(private readonly addon: NativeAddon, cuda: boolean, notice: string | undefined, residentWeights = false) {
    this.backend = cuda ? 'cuda' : 'cpu';
    this.gpu = cuda;
    this.notice = notice;
    this.residentWeights = cuda && residentWeights;
  }
  /** The GPU copy of `weights` for an n x k call, uploaded on first use (residentWeights only). */
  private residentCopy(weights: Uint32Array, n: number, k: number): ResidentWeightsHandle | undefined {
    if (!this.residentWeights || n === 0 || k === 0) return undefined;
    const have = this.resident.get(weights);
    if (have !== undefined && have.n === n && have.k === k) return have.handle;
    if (have !== undefined) this.addon.cudaFreeWeights(have.handle);
    const handle = this.addon.cudaUploadWeights(weights, n, k);
    this.resident.set(weights, { handle, n, k });
    return handle;
  }
  get cpuFeatures(): string {
    return this.addon.cpuInfo().level;
  }
  ternaryBinaryGemm(plus: Uint32Array, minus: Uint32Array, weights: Uint32Array, m: number, n: number, k: number,
    out?: Int32Array): Int32Array {
    checkDims(m, n, k);
    const kw = Math.ceil(k / 32);
    checkLength('plus', plus, m * kw);
    checkLength('minus', minus, m * kw);
    checkLength('weights', weights, n * kw);
    const y = outBuffer(out, m, n);
    const copy = m === 0 ? undefined : this.residentCopy(weights, n, k);
    this.addon.ternaryBinaryGemm(plus, minus, copy ?? weights, m, n, k, y, this.gpu);
    return y;
  }
  int8BinaryGemm(a: Int8Array, weights: Uint32Array, m: number, n: number, k: number, out?: Int32Array): Int32Array {
    checkDims(m, n, k);
    checkLength('a', a, m * k);
    checkLength('weights', weights, n * Math.ceil(k / 32));
    const y = outBuffer(out, m, n);
    const copy = m === 0 ? undefined : this.residentCopy(weights, n, k);
    this.addon.int8BinaryGemm(a, copy ?? weights, m, n, k, y, this.gpu);
    return y;
  }
  ternaryTernaryGemm(aPlus: Uint32Array, aMinus: Uint32Array, bPlus: Uint32Array, bMinus: Uint32Array, m: number,
    n: number, k: number, out?: Int32Array): Int32Array {
    checkDims(m, n, k);
    const kw = Math.ceil(k / 32);
    checkLength('aPlus', aPlus, m * kw);
    checkLength('aMinus', aMinus, m * kw);
    checkLength('bPlus', bPlus, n * kw);
    checkLength('bMinus', bMinus, n * kw);
    const y = outBuffer(out, m, n);
    this.addon.ternaryTernaryGemm(aPlus, aMinus, bPlus, bMinus, m, n, k, y, this.gpu);
    return y;
  }
}

/**
 * Loads the addon (BwqError if it is not built) and picks the device. 'auto' and 'cuda' use CUDA when
 * libbwq_cuda.so was built and a device answers; otherwise the CPU kernels, with a one-line `notice`
 * saying why (callers print it once). 'cpu' never touches CUDA. `residentWeights` (CUDA only): keep each
 * weights array's GPU copy across calls, keyed by the array object, so callers must not modify a weights
 * array after passing it (the packed model's weights never change).
 */
export function loadNativeKernels(options: { device?: NativeDevice; residentWeights?: boolean } = {}): NativeKernels {
  const device = options.device ?? 'auto';
  const addon = loadAddon();
  if (device === 'cpu') return new Kernels(addon, false, undefined);
  const cuda = addon.cudaInit();
  if (cuda.ok) return kernelsOnCuda(addon, options.residentWeights === true);
  const cpu = addon.cpuInfo();
  const notice = `bwq: CUDA unavailable (${cuda.message}); using CPU kernels (${cpu.level}, ${cpu.threads} threads)`;
  return new Kernels(addon, false, notice);
}

/** The typed kernels over an addon whose CUDA side is up (exported for tests with a stand-in addon). */
export function kernelsOnCuda(addon: NativeAddon, residentWeights: boolean): NativeKernels {
  return new Kernels(addon, true, undefined, residentWeights);
}

/** Worker threads of the CPU kernels (default: hardware concurrency or BWQ_NUM_THREADS); n <= 0 restores it. */
export function setNativeThreads(n: number): number {
  return loadAddon().setThreads(Math.max(0, Math.trunc(n)));
}

/** Forces a CPU code path (clamped to what the CPU supports); returns the path now in use. */
export function setNativeCpuLevel(level: 'auto' | 'scalar' | 'avx2' | 'avx512'): string {
  return loadAddon().setCpuLevel(level);
}

/** CPU code path detected by cpuid, the one in use, and the thread count. */
export function nativeCpuInfo(): { level: string; detected: string; threads: number } {
  return loadAddon().cpuInfo();
}

export type CudaBenchResult = CudaBenchRaw;

/**
 * Times our CUDA kernel and cuBLAS FP16 GEMM (cudaEvent timing inside libbwq_cuda.so, the same code the
 * C++ driver native/test/driver.cpp uses). kind: 'ternary-binary' | 'int8-binary'. coldWeights: the calls
 * rotate over copies of the weights that together take twice the L2 (both sides), so that every call reads
 * its weights from memory, as each layer of a model does in decoding (BWQ_BENCH_COLD_WEIGHTS).
 */
export function nativeCudaBench(kind: 'ternary-binary' | 'int8-binary', m: number, n: number, k: number,
  warmup = 10, reps = 100, coldWeights = false): CudaBenchResult {
  checkDims(m, n, k);
  return loadAddon().cudaBench((kind === 'ternary-binary' ? 0 : 1) | (coldWeights ? BENCH_COLD_WEIGHTS : 0), m, n, k,
    warmup, reps);
}

/** bwq.h BWQ_BENCH_COLD_WEIGHTS */
const BENCH_COLD_WEIGHTS = 4;
