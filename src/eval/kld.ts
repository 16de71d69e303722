/**
 * KL divergence of a (quantized) model against a base model on the same windows, computed in the same pass as
 * the perplexity (llama.cpp's `--kl-divergence` reports these figures). For every predicted position t of every
 * window, with P the base model's and Q the evaluated model's next-token distribution (log-softmax in double):
 *
 *   KL_t   = Σ_v P_v (log P_v − log Q_v)
 *   top-1  = argmax P == argmax Q
 *   Δp_t   = Q(x_{t+1}) − P(x_{t+1})          (the change in the probability of the actual next token)
 *   NLL_t  = −log Q(x_{t+1})                  (the perplexity of the evaluated model)
 *
 * Reported: mean, median, 99th percentile and maximum KL, top-1 agreement, mean Δp, and the perplexities of
 * both models on those windows.
 */
import { BwqError } from '../errors.js';
import type { ModelRunner } from '../onnx/model-runner.js';
import { windowCount } from './perplexity.js';

export interface KldResult {
  /** predicted tokens compared: windows × (seqlen − 1) */
  tokens: number;
  windows: number;
  seqlen: number;
  ppl: number;
  basePpl: number;
  kld: { mean: number; median: number; p99: number; max: number };
  top1Agreement: number;
  meanDeltaP: number;
  seconds: number;
}

/** log-softmax of row [offset, offset + n) into out (double). */
function logSoftmax(x: Float32Array, offset: number, n: number, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, x[offset + i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[offset + i]! - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < n; i++) out[i] = x[offset + i]! - lse;
}

function argmax(x: Float64Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** The q-th quantile (0 … 1) of sorted values, linear between neighbours. */
export function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export async function evaluateKld(runner: Pick<ModelRunner, 'logits' | 'config'>, base: Pick<ModelRunner, 'logits' | 'config'>,
  ids: Int32Array, options: { seqlen: number; maxWindows?: number; onProgress?: (done: number, total: number) => void }):
  Promise<KldResult> {
  const { seqlen } = options;
  const V = runner.config.vocabSize;
  if (base.config.vocabSize !== V) {
    throw new BwqError(`the base model's vocabulary has ${base.config.vocabSize} tokens, the evaluated model's ${V}: KL divergence needs the same tokens`);
  }
  const windows = windowCount(ids.length, seqlen, options.maxWindows);
  if (windows < 1) throw new BwqError(`text has ${ids.length} tokens, fewer than one window of ${seqlen}`);
  const start = performance.now();
  const per = seqlen - 1;
  const kl = new Float64Array(windows * per);
  const lq = new Float64Array(V);
  const lp = new Float64Array(V);
  let nll = 0;
  let baseNll = 0;
  let agree = 0;
  let deltaP = 0;
  options.onProgress?.(0, windows);
  for (let w = 0; w < windows; w++) {
    const window = ids.subarray(w * seqlen, (w + 1) * seqlen);
    const q = await runner.logits(window, 1, seqlen);
    const p = await base.logits(window, 1, seqlen);
    for (let t = 0; t < per; t++) {
      logSoftmax(q, t * V, V, lq);
      logSoftmax(p, t * V, V, lp);
      let d = 0;
      for (let v = 0; v < V; v++) {
        const lpv = lp[v]!;
        if (lpv > -745) d += Math.exp(lpv) * (lpv - lq[v]!);  // exp underflows to 0 below about −745
      }
      kl[w * per + t] = Math.max(0, d);
      if (argmax(lp) === argmax(lq)) agree++;
      const target = window[t + 1]!;
      deltaP += Math.exp(lq[target]!) - Math.exp(lp[target]!);
      nll -= lq[target]!;
      baseNll -= lp[target]!;
    }
    options.onProgress?.(w + 1, windows);
  }
  const tokens = windows * per;
  let sum = 0;
  for (const x of kl) sum += x;
  const sorted = Float64Array.from(kl).sort();
  return {
    tokens, windows, seqlen,
    ppl: Math.exp(nll / tokens),
    basePpl: Math.exp(baseNll / tokens),
    kld: { mean: sum / tokens, median: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: sorted[sorted.length - 1]! },
    top1Agreement: agree / tokens,
    meanDeltaP: deltaP / tokens,
    seconds: (performance.now() - start) / 1000,
  };
}
