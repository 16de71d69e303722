/**
 * The quality-gate flags of `bwq eval` (--max-ppl, --max-ppl-ratio with --base, --max-kld with --kld) as gate
 * limits (src/eval/gates.ts).
 */
import { resolve } from 'node:path';
import { usageError } from '../errors.js';
import type { GateLimits } from '../eval/gates.js';
import { parseNumberFlag } from './output.js';

export interface GateFlags {
  maxPpl?: string;
  maxPplRatio?: string;
  maxKld?: string;
  base?: string;
  kld?: string;
}

function positive(flag: string, value: string): number {
  const n = parseNumberFlag(flag, value);
  if (!(n > 0)) throw usageError(`${flag} must be a positive number, got ${value}`);
  return n;
}

/** The gate limits of the flags (usage errors for bad values or a gate without the base model it needs). */
export function parseGateFlags(flags: GateFlags): GateLimits {
  const limits: GateLimits = {};
  if (flags.maxPpl !== undefined) limits.maxPpl = positive('--max-ppl', flags.maxPpl);
  if (flags.maxPplRatio !== undefined) {
    limits.maxPplRatio = positive('--max-ppl-ratio', flags.maxPplRatio);
    if (flags.base === undefined && flags.kld === undefined) throw usageError('--max-ppl-ratio needs the base model: --base BASE_DIR (or --kld BASE_DIR)');
  }
  if (flags.maxKld !== undefined) {
    const k = parseNumberFlag('--max-kld', flags.maxKld);
    if (!(k >= 0)) throw usageError(`--max-kld must be at least 0, got ${flags.maxKld}`);
    limits.maxKld = k;
    if (flags.kld === undefined) throw usageError('--max-kld needs --kld BASE_DIR (the model the KL divergence is measured against)');
  }
  if (flags.base !== undefined && flags.kld !== undefined && resolve(flags.base) !== resolve(flags.kld)) {
    throw usageError('--base and --kld name different models; both models are evaluated in one pass against one base model');
  }
  if (flags.base !== undefined && flags.maxPplRatio === undefined) throw usageError('--base BASE_DIR is the base model of --max-ppl-ratio; pass --max-ppl-ratio too (or --kld BASE_DIR for the KL divergence)');
  return limits;
}

