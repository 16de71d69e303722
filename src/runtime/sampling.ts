/**
 * Next-token choice from a logits row (pure functions; docs/GENERATE.md):
 *  - greedy (temperature 0): argmax, the lowest index on ties;
 *  - temperature T > 0: softmax(logits / T) in float64, then the top-p nucleus (the smallest set of
 *    highest-probability tokens whose mass is >= p; equal probabilities ordered by index), then one
 *    draw from the renormalized nucleus with a seeded PRNG (mulberry32), so one seed gives one output:
 *    u = random(), the first nucleus token (in nucleus order) whose cumulative probability exceeds u.
 */

export interface SamplingOptions {
  /** 0 = greedy; otherwise the softmax temperature (> 0). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 keeps every token. */
  topP: number;
}

/** A generator of uniform numbers in [0, 1). */
export type Random = () => number;

/** Largest seed createRandom takes (seeds are 32-bit). */
export const MAX_SEED = 0xffff_ffff;

/**
 * mulberry32 (Tommy Ettinger's 32-bit PRNG): a Weyl sequence state += 0x6D2B79F5 mixed by two
 * multiply-xorshift rounds; 2^32 period, one state word. Returns k / 2^32 for a 32-bit k, in [0, 1).
 * The seed is taken modulo 2^32.
 */
export function createRandom(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
}

/** Index of the largest value; the lowest index on ties (NaN never wins). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/** softmax(logits / temperature) in float64 (max-subtracted; -Infinity logits get probability 0). */
export function softmax(logits: ArrayLike<number>, temperature: number): Float64Array {
  if (!(temperature > 0)) throw new RangeError(`temperature must be > 0, got ${temperature}`);
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i]! > max) max = logits[i]!;
  const probs = new Float64Array(n);
  if (max === -Infinity) {
    // Every logit -Infinity (or NaN): no preference, uniform.
    probs.fill(1 / n);
    return probs;
  }
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp((logits[i]! - max) / temperature);
    const p = Number.isNaN(e) ? 0 : e;
    probs[i] = p;
    sum += p;
  }
  for (let i = 0; i < n; i++) probs[i] = probs[i]! / sum;
  return probs;
}

export interface Nucleus {
  /** Token ids, highest probability first (equal probabilities by ascending id). */
  ids: Int32Array;
  /** Their probabilities renormalized to sum to 1. */
  probs: Float64Array;
}

/**
 * The top-p nucleus of a distribution: the smallest prefix of the tokens sorted by descending
 * probability (ties by ascending id) whose mass is >= p. p = 1 keeps every token, in id order
 * (no sort: the same distribution, and no O(V log V) step per token).
 */
export function nucleus(probs: Float64Array, topP: number): Nucleus {
  if (!(topP > 0 && topP <= 1)) throw new RangeError(`top-p must be in (0, 1], got ${topP}`);
  if (topP === 1) {
    let total = 0;
    for (let i = 0; i < probs.length; i++) total += probs[i]!;
    return { ids: Int32Array.from({ length: probs.length }, (_, i) => i), probs: probs.map((p) => p / total) };
  }
  const order = Array.from({ length: probs.length }, (_, i) => i);
  order.sort((a, b) => probs[b]! - probs[a]! || a - b);
  let kept = order.length; // when rounding keeps the total mass below p
  let mass = 0;
  for (let k = 0; k < order.length; k++) {
    mass += probs[order[k]!]!;
    if (mass >= topP) {
      kept = k + 1;
      break;
    }
  }
  const ids = Int32Array.from(order.slice(0, kept));
  const out = new Float64Array(kept);
  let total = 0;
  for (let k = 0; k < kept; k++) total += probs[ids[k]!]!;
  for (let k = 0; k < kept; k++) out[k] = probs[ids[k]!]! / total;
  return { ids, probs: out };
}

/** One draw from a renormalized nucleus: the first token whose cumulative probability exceeds u. */
export function drawFrom(n: Nucleus, u: number): number {
  let cumulative = 0;
  for (let k = 0; k < n.ids.length; k++) {
    cumulative += n.probs[k]!;
    if (u < cumulative) return n.ids[k]!;
  }
  return n.ids[n.ids.length - 1]!; // u within rounding of 1
}

/** The next token for one logits row: greedy when temperature is 0, else a nucleus draw using `random`. */
export function sampleToken(logits: ArrayLike<number>, options: SamplingOptions, random: Random): number {
  if (options.temperature === 0) return argmax(logits);
  return drawFrom(nucleus(softmax(logits, options.temperature), options.topP), random());
}
