/** The native addon's Householder QR (native/ops/linalg/qr_cpu.cpp) in src/linalg/qr.ts's signature, equal to it bit for bit. */
import type { Qr } from '../linalg/qr.js';
import { optionalAddonFunctions } from './loader.js';

interface QrAddon {
  householderQr(a: Float64Array, m: number, n: number, q: Float64Array, r: Float64Array): void;
}

/** The QR on the CPU kernels' threads, or undefined when the addon is not built (or predates it). */
export function nativeQr(): Qr | undefined {
  const addon = optionalAddonFunctions<QrAddon>(['householderQr']);
  if (addon === undefined) return undefined;
  const { householderQr } = addon;
  return (a, m, n) => {
    if (m < n) throw new Error(`qr: need rows >= cols, got ${m}x${n}`);
    const q = new Float64Array(m * n);
    const r = new Float64Array(n * n);
    householderQr(a instanceof Float64Array ? a : Float64Array.from(a), m, n, q, r);
    return { q, r };
  };
}
