/**
 * Perplexity as GPTQ/QuaRot compute it on WikiText-2: the whole text is tokenized once (no
 * special tokens), cut into non-overlapping windows of `seqlen` tokens (the remainder is
 * dropped), each window is run independently, and
 *
 *   ppl = exp( Σ_windows Σ_{t=1}^{seqlen-1} -log p(x_t | x_<t) / (windows · (seqlen-1)) ).
 */
import { BwqError } from '../errors.js';
import type { ModelRunner } from '../onnx/model-runner.js';

export interface PerplexityResult {
  ppl: number;
  meanNll: number;
  /** predicted tokens: windows × (seqlen − 1) */
  tokens: number;
  windows: number;
  seqlen: number;
  seconds: number;
  /** input tokens processed per second: windows × seqlen / seconds */
  tokensPerSecond: number;
}

export interface PerplexityOptions {
  seqlen: number;
  maxWindows?: number;
  /** windows per runner call (default 1) */
  batch?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Number of full windows of `seqlen` in `tokenCount` tokens, capped by maxWindows. */
export function windowCount(tokenCount: number, seqlen: number, maxWindows?: number): number {
  const full = Math.floor(tokenCount / seqlen);
  return maxWindows === undefined ? full : Math.min(full, maxWindows);
}

export async function evaluatePerplexity(
  runner: { nll: ModelRunner['nll'] },
  ids: Int32Array,
  options: PerplexityOptions,
): Promise<PerplexityResult> {
  const { seqlen } = options;
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new BwqError(`seqlen must be an integer >= 2, got ${seqlen}`);
  const batch = options.batch ?? 1;
  if (!Number.isInteger(batch) || batch < 1) throw new BwqError(`batch must be a positive integer, got ${batch}`);
  const windows = windowCount(ids.length, seqlen, options.maxWindows);
  if (windows < 1) throw new BwqError(`text has ${ids.length} tokens, fewer than one window of ${seqlen}`);
  const start = performance.now();
  let sum = 0;
  let count = 0;
  options.onProgress?.(0, windows);
  for (let w = 0; w < windows; w += batch) {
    const b = Math.min(batch, windows - w);
    const chunk = ids.subarray(w * seqlen, (w + b) * seqlen);
    const r = await runner.nll(chunk, b, seqlen);
    sum += r.sum;
    count += r.count;
    options.onProgress?.(w + b, windows);
  }
  const seconds = (performance.now() - start) / 1000;
  const meanNll = sum / count;
  return {
    ppl: Math.exp(meanNll),
    meanNll,
    tokens: count,
    windows,
    seqlen,
    seconds,
    tokensPerSecond: seconds > 0 ? (windows * seqlen) / seconds : 0,
  };
}
