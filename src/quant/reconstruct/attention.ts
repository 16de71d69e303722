/**
 * Causal grouped-query attention of `batch` sequences with the recipe's operand quantizer sites
 * (per head and per row, as src/native/attention.ts), forward and backward:
 *
 *   Q̂ = q_Q(Q_h), K̂ = q_K(K_g), V̂ = q_V(V_g)          (g = kv head of h)
 *   S = c·Q̂ K̂ᵀ (c = 1/√d), P = softmax(S) over the unmasked keys (masked entries exactly 0)
 *   P̂ = q_P(P) per query row, its statistics over the unmasked keys (sites.probsRow 'unmasked') or over the
 *       whole row of length seq, masked zeros included ('window'; src/quant/attention-probs.ts), O_h = P̂ V̂
 *
 * Backward for ∂L/∂O: ∂P̂ = ∂O V̂ᵀ, ∂V̂ += P̂ᵀ ∂O, ∂P = q_P′(∂P̂), ∂S = P ⊙ (∂P − rowsum(∂P ⊙ P)),
 * ∂Q̂ = c·∂S K̂, ∂K̂ += c·∂Sᵀ Q̂, then each site's backward (straight-through, src/quant/reconstruct/act-quant.ts).
 */
import type { ProbsRow } from '../recipe.js';
import { firstVisibleKey } from '../attention-probs.js';
import type { CausalRows } from './act-quant.js';
import { alloc, type Arr, type Gemm } from './gemm.js';
import type { QuantSite, SiteCache } from './quant-site.js';
import type { StagePoint } from './schedule.js';

export interface AttentionDims {
  seq: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** keys with i − j ≥ slidingWindow are masked; undefined = plain causal */
  slidingWindow: number | undefined;
}

export interface AttentionSites {
  query: QuantSite;
  key: QuantSite;
  value: QuantSite;
  probs: QuantSite;
  /** the entries the probs quantizer's statistics are taken over (AttentionRecipe.probsRow; undefined = 'window') */
  probsRow: ProbsRow | undefined;
}

interface SiteOut<T extends Arr> {
  input: T;
  out: T;
  cache: SiteCache | undefined;
}

export interface AttentionCache<T extends Arr> {
  /** per sequence, per kv head */
  keys: SiteOut<T>[][];
  values: SiteOut<T>[][];
  /** per sequence, per head */
  queries: SiteOut<T>[][];
  probs: SiteOut<T>[][];
  /** the softmax output P per sequence and head */
  softmax: T[][];
}

function gather<T extends Arr>(x: T, b: number, seq: number, heads: number, hd: number, h: number): T {
  const out = alloc(x, seq * hd);
  for (let t = 0; t < seq; t++) {
    const o = ((b * seq + t) * heads + h) * hd;
    out.set(x.subarray(o, o + hd), t * hd);
  }
  return out;
}

function scatterAdd(dst: Arr, src: Arr, b: number, seq: number, heads: number, hd: number, h: number): void {
  for (let t = 0; t < seq; t++) {
    const o = ((b * seq + t) * heads + h) * hd;
    for (let j = 0; j < hd; j++) dst[o + j] = dst[o + j]! + src[t * hd + j]!;
  }
}

function site<T extends Arr>(s: QuantSite | undefined, x: T, rows: number, cols: number, at: StagePoint, causal?: CausalRows): SiteOut<T> {
  if (s === undefined) return { input: x, out: x, cache: undefined };
  const r = s.forward(x, rows, cols, at, causal);
  return { input: x, out: r.out, cache: r.cache };
}

function siteBackward<T extends Arr>(s: QuantSite | undefined, o: SiteOut<T>, g: T): T {
  if (s === undefined || o.cache === undefined) return g;
  return s.backward(o.input, g, o.cache);
}

export async function attentionForward<T extends Arr>(q: T, k: T, v: T, batch: number, dims: AttentionDims,
  sites: AttentionSites | undefined, at: StagePoint, gemm: Gemm): Promise<{ ctx: T; cache: AttentionCache<T> }> {
  const { seq, numHeads, numKvHeads, headDim: hd, slidingWindow } = dims;
  const group = numHeads / numKvHeads;
  const scaling = 1 / Math.sqrt(hd);
  const ctx = alloc(q, batch * seq * numHeads * hd);
  const cache: AttentionCache<T> = { keys: [], values: [], queries: [], probs: [], softmax: [] };
  const lo = (i: number): number => firstVisibleKey(i, slidingWindow);
  const probRows: CausalRows = { period: seq, slidingWindow, unmasked: sites?.probsRow === 'unmasked' };
  const row = new Float64Array(seq);
  // every head's rows first, so the sites' alignment factors are those of the whole minibatch (QuantSite.prepareFactors)
  const heads = (x: T, n: number): T[][] => Array.from({ length: batch }, (_, b) => Array.from({ length: n }, (_, h) => gather(x, b, seq, n, hd, h)));
  const qh = heads(q, numHeads);
  const kh = heads(k, numKvHeads);
  const vh = heads(v, numKvHeads);
  sites?.query.prepareFactors(qh.flat(), seq, hd, at);
  sites?.key.prepareFactors(kh.flat(), seq, hd, at);
  sites?.value.prepareFactors(vh.flat(), seq, hd, at);
  for (let b = 0; b < batch; b++) {
    const keys: SiteOut<T>[] = [];
    const values: SiteOut<T>[] = [];
    for (let g = 0; g < numKvHeads; g++) {
      keys.push(site(sites?.key, kh[b]![g]!, seq, hd, at));
      values.push(site(sites?.value, vh[b]![g]!, seq, hd, at));
    }
    const queries: SiteOut<T>[] = [];
    const softmax: T[] = [];
    for (let h = 0; h < numHeads; h++) {
      const g = Math.floor(h / group);
      const qs = site(sites?.query, qh[b]![h]!, seq, hd, at);
      const p = await gemm.nt(qs.out, keys[g]!.out, seq, hd, seq);
      for (let i = 0; i < seq; i++) {
        const o = i * seq;
        const start = lo(i);
        let max = -Infinity;
        for (let j = start; j <= i; j++) {
          const s = p[o + j]! * scaling;
          row[j] = s;
          if (s > max) max = s;
        }
        let sum = 0;
        for (let j = start; j <= i; j++) {
          const e = Math.exp(row[j]! - max);
          row[j] = e;
          sum += e;
        }
        p.fill(0, o, o + start);
        for (let j = start; j <= i; j++) p[o + j] = row[j]! / sum;
        p.fill(0, o + i + 1, o + seq);
      }
      queries.push(qs);
      softmax.push(p);
    }
    cache.keys.push(keys);
    cache.values.push(values);
    cache.queries.push(queries);
    cache.softmax.push(softmax);
  }
  sites?.probs.prepareFactors(cache.softmax.flat(), seq, seq, at, probRows);
  for (let b = 0; b < batch; b++) {
    const probs: SiteOut<T>[] = [];
    for (let h = 0; h < numHeads; h++) {
      const ps = site(sites?.probs, cache.softmax[b]![h]!, seq, seq, at, probRows);
      const ch = await gemm.nn(ps.out, cache.values[b]![Math.floor(h / group)]!.out, seq, seq, hd);
      scatterAdd(ctx, ch, b, seq, numHeads, hd, h);
      probs.push(ps);
    }
    cache.probs.push(probs);
  }
  return { ctx, cache };
}

/** ∂L/∂q, ∂L/∂k, ∂L/∂v (before the sites) for ∂L/∂ctx; accumulates the sites' parameter gradients. */
export async function attentionBackward<T extends Arr>(dctx: T, batch: number, dims: AttentionDims,
  sites: AttentionSites | undefined, cache: AttentionCache<T>, gemm: Gemm): Promise<{ dq: T; dk: T; dv: T }> {
  const { seq, numHeads, numKvHeads, headDim: hd, slidingWindow } = dims;
  const group = numHeads / numKvHeads;
  const scaling = 1 / Math.sqrt(hd);
  const dq = alloc(dctx, batch * seq * numHeads * hd);
  const dk = alloc(dctx, batch * seq * numKvHeads * hd);
  const dv = alloc(dctx, batch * seq * numKvHeads * hd);
  const lo = (i: number): number => firstVisibleKey(i, slidingWindow);
  for (let b = 0; b < batch; b++) {
    const dkHat = Array.from({ length: numKvHeads }, () => alloc(dctx, seq * hd));
    const dvHat = Array.from({ length: numKvHeads }, () => alloc(dctx, seq * hd));
    for (let h = 0; h < numHeads; h++) {
      const g = Math.floor(h / group);
      const dO = gather(dctx, b, seq, numHeads, hd, h);
      const ps = cache.probs[b]![h]!;
      const P = cache.softmax[b]![h]!;
      const dPhat = await gemm.nt(dO, cache.values[b]![g]!.out, seq, hd, seq);
      const dvh = await gemm.tn(ps.out, dO, seq, seq, hd);
      const acc = dvHat[g]!;
      for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + dvh[i]!;
      const dP = siteBackward(sites?.probs, ps, dPhat);
      // softmax backward on the unmasked entries; ∂S = 0 elsewhere
      const dS = alloc(dctx, seq * seq);
      for (let i = 0; i < seq; i++) {
        const o = i * seq;
        let dot = 0;
        for (let j = lo(i); j <= i; j++) dot += dP[o + j]! * P[o + j]!;
        for (let j = lo(i); j <= i; j++) dS[o + j] = P[o + j]! * (dP[o + j]! - dot) * scaling;
      }
      const qs = cache.queries[b]![h]!;
      const dqHat = await gemm.nn(dS, cache.keys[b]![g]!.out, seq, seq, hd);
      scatterAdd(dq, siteBackward(sites?.query, qs, dqHat), b, seq, numHeads, hd, h);
      const dkh = await gemm.tn(dS, qs.out, seq, seq, hd);
      const kacc = dkHat[g]!;
      for (let i = 0; i < kacc.length; i++) kacc[i] = kacc[i]! + dkh[i]!;
    }
    for (let g = 0; g < numKvHeads; g++) {
      scatterAdd(dk, siteBackward(sites?.key, cache.keys[b]![g]!, dkHat[g]!), b, seq, numKvHeads, hd, g);
      scatterAdd(dv, siteBackward(sites?.value, cache.values[b]![g]!, dvHat[g]!), b, seq, numKvHeads, hd, g);
    }
  }
  return { dq, dk, dv };
}
