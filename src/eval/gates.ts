/**
 * Quality gates of `bwq eval` (docs/EVAL.md, docs/CI.md): limits a CI pipeline sets on the evaluated model.
 *
 *   --max-ppl X                  perplexity ≤ X
 *   --max-ppl-ratio R            perplexity / base perplexity ≤ R, both on the same windows (--base BASE_DIR,
 *                                or the --kld BASE_DIR model; src/eval/kld.ts evaluates both in one pass)
 *   --max-kld K                  mean per-token KL divergence against the --kld BASE_DIR model ≤ K
 *
 * A value that is not a finite number (a NaN perplexity) fails its gate. When any gate fails the command prints
 * its result as usual (with --json, `gates` in the JSON object) and then fails with GATE_FAILED_EXIT_CODE and one
 * line naming every failed gate with the measured value and the limit.
 */
import { BwqError, GATE_FAILED_EXIT_CODE } from '../errors.js';

export type GateName = 'max-ppl' | 'max-ppl-ratio' | 'max-kld';

export interface GateLimits {
  maxPpl?: number;
  maxPplRatio?: number;
  maxKld?: number;
}

export interface GateResult {
  gate: GateName;
  /** the limit the flag set */
  limit: number;
  /** the measured value: perplexity, perplexity ratio or mean KL divergence */
  value: number;
  passed: boolean;
}

/** What the evaluation measured: the perplexity, and with a base model its perplexity and the mean KL. */
export interface GateMeasurements {
  ppl: number;
  basePpl?: number;
  meanKld?: number;
}

function gate(name: GateName, limit: number, value: number): GateResult {
  return { gate: name, limit, value, passed: Number.isFinite(value) && value <= limit };
}

/** Each gate the limits set, checked against the measurements, in the order max-ppl, max-ppl-ratio, max-kld. */
export function checkGates(limits: GateLimits, measured: GateMeasurements): GateResult[] {
  const results: GateResult[] = [];
  if (limits.maxPpl !== undefined) results.push(gate('max-ppl', limits.maxPpl, measured.ppl));
  if (limits.maxPplRatio !== undefined) {
    if (measured.basePpl === undefined) throw new Error('--max-ppl-ratio checked without a base perplexity');
    results.push(gate('max-ppl-ratio', limits.maxPplRatio, measured.ppl / measured.basePpl));
  }
  if (limits.maxKld !== undefined) {
    if (measured.meanKld === undefined) throw new Error('--max-kld checked without a KL divergence');
    results.push(gate('max-kld', limits.maxKld, measured.meanKld));
  }
  return results;
}

const WHAT: Record<GateName, string> = { 'max-ppl': 'perplexity', 'max-ppl-ratio': 'perplexity ratio to the base model', 'max-kld': 'mean KL divergence' };

/** "perplexity 12.3456 > 10" (6 significant digits, as the measured value is printed elsewhere). */
export function describeGate(r: GateResult): string {
  const fmt = (x: number): string => (Number.isFinite(x) ? String(Number(x.toPrecision(6))) : String(x));
  return `--${r.gate}: ${WHAT[r.gate]} ${fmt(r.value)} ${r.passed ? '≤' : '>'} ${fmt(r.limit)}`;
}

/** Throws the one-line gate failure (exit GATE_FAILED_EXIT_CODE) when a gate failed; `file` is the evaluated model. */
export function enforceGates(results: readonly GateResult[], file: string): void {
  const failed = results.filter((r) => !r.passed);
  if (failed.length === 0) return;
  throw new BwqError(`quality gate failed: ${failed.map(describeGate).join('; ')}`,
    { file, exitCode: GATE_FAILED_EXIT_CODE, resultPrinted: true });
}
