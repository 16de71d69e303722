/**
 * Locates and loads the N-API addon built by `npm install` (node-gyp → build/Release/bwq.node).
 * Only this module touches the raw binding; src/native/kernels.ts wraps it in the typed API.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BwqError } from '../errors.js';
import { PACKAGE_ROOT } from '../package-paths.js';

/** Raw functions exported by native/src/addon.cpp. */
export interface NativeAddon {
  cpuInfo(): { level: string; detected: string; threads: number };
  setCpuLevel(level: 'auto' | 'scalar' | 'avx2' | 'avx512'): string;
  setThreads(n: number): number;
  /** weights: packed bits, or a resident copy from cudaUploadWeights (then it runs on CUDA) */
  ternaryBinaryGemm(plus: Uint32Array, minus: Uint32Array, weights: Uint32Array | ResidentWeightsHandle, m: number,
    n: number, k: number, out: Int32Array, cuda: boolean): Int32Array;
  int8BinaryGemm(a: Int8Array, weights: Uint32Array | ResidentWeightsHandle, m: number, n: number, k: number,
    out: Int32Array, cuda: boolean): Int32Array;
  ternaryTernaryGemm(aPlus: Uint32Array, aMinus: Uint32Array, bPlus: Uint32Array, bMinus: Uint32Array, m: number,
    n: number, k: number, out: Int32Array, cuda: boolean): Int32Array;
  cudaInit(): { ok: boolean; message: string; library: string };
  cudaBench(kind: number, m: number, n: number, k: number, warmup: number, reps: number): CudaBenchRaw;
  /** GPU copy of binary weights [n, ceil(k/32)]; freed by cudaFreeWeights or when garbage-collected */
  cudaUploadWeights(weights: Uint32Array, n: number, k: number): ResidentWeightsHandle;
  cudaFreeWeights(resident: ResidentWeightsHandle): void;
}

/** Opaque N-API external owning a GPU copy of binary weights. */
export interface ResidentWeightsHandle { readonly __residentWeights: unique symbol }

export interface CudaBenchRaw {
  msOurs: number; msCublas: number; topsOurs: number; tflopsCublas: number; kernel: string;
  /** the same calls captured into one CUDA graph (no per-launch CPU overhead); 0 when not measured */
  msOursGraph: number; msCublasGraph: number;
  checked: boolean; mismatches: number; cublas: boolean;
}

/** Candidate paths of the addon, first match wins (BWQ_NATIVE_ADDON overrides). */
export function addonCandidates(): string[] {
  const root = PACKAGE_ROOT;
  const list: string[] = [];
  const env = process.env['BWQ_NATIVE_ADDON'];
  if (env !== undefined && env !== '') list.push(resolve(env));
  list.push(join(root, 'build', 'Release', 'bwq.node'), join(root, 'build', 'Debug', 'bwq.node'));
  return list;
}

let cached: NativeAddon | undefined;

/** The addon's optional functions `names` (a feature of the quantize numerics), or undefined when the addon is not
 *  built or predates them: the caller then runs its TypeScript reference. */
export function optionalAddonFunctions<T extends object>(names: ReadonlyArray<keyof T>): T | undefined {
  let addon: Record<string, unknown>;
  try {
    addon = loadAddon() as unknown as Record<string, unknown>;
  } catch {
    return undefined;
  }
  return names.every((n) => typeof addon[n as string] === 'function') ? addon as T : undefined;
}

/** Loads the addon once; BwqError naming the expected path when it is missing or broken. */
export function loadAddon(): NativeAddon {
  if (cached !== undefined) return cached;
  const candidates = addonCandidates();
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) {
    throw new BwqError('native kernels are not built (run `npm install` or `npx node-gyp rebuild` in the bwq package)',
      { file: candidates[candidates.length - 2] ?? 'build/Release/bwq.node' });
  }
  const require = createRequire(import.meta.url);
  try {
    cached = require(found) as NativeAddon;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new BwqError(`cannot load the native addon: ${message}`, { file: found, cause: error });
  }
  return cached;
}
