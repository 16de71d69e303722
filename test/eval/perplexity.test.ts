import { describe, expect, test } from 'vitest';
import { evaluatePerplexity, windowCount } from '../../src/eval/perplexity.js';
import { resolveSeqlen } from '../../src/eval/seqlen.js';
import { BwqError } from '../../src/errors.js';

/** A fake runner whose NLL of token y is y/100, recording the calls it gets. */
function fakeRunner() {
  const calls: { batch: number; seq: number; first: number }[] = [];
  return {
    calls,
    async nll(ids: Int32Array, batch: number, seq: number) {
      expect(ids.length).toBe(batch * seq);
      calls.push({ batch, seq, first: ids[0]! });
      let sum = 0;
      for (let b = 0; b < batch; b++) for (let t = 1; t < seq; t++) sum += ids[b * seq + t]! / 100;
      return { sum, count: batch * (seq - 1) };
    },
  };
}

describe('evaluatePerplexity', () => {
  const ids = Int32Array.from({ length: 103 }, (_, i) => i);

  test('non-overlapping windows, remainder dropped, mean over seq-1 predictions per window', async () => {
    const r = fakeRunner();
    const res = await evaluatePerplexity(r, ids, { seqlen: 10 });
    expect(res.windows).toBe(10);
    expect(res.tokens).toBe(90);
    expect(r.calls.map((c) => c.first)).toEqual([0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
    // predicted tokens: all of 0..99 except the window starts 0,10,…,90
    let expected = 0;
    for (let i = 0; i < 100; i++) if (i % 10 !== 0) expected += i / 100;
    expect(res.meanNll).toBeCloseTo(expected / 90, 12);
    expect(res.ppl).toBeCloseTo(Math.exp(expected / 90), 10);
    expect(res.seqlen).toBe(10);
  });

  test('batching groups windows and gives the same result; max windows caps', async () => {
    const r1 = fakeRunner();
    const a = await evaluatePerplexity(r1, ids, { seqlen: 10, batch: 1 });
    const r4 = fakeRunner();
    const b = await evaluatePerplexity(r4, ids, { seqlen: 10, batch: 4 });
    expect(r4.calls.map((c) => c.batch)).toEqual([4, 4, 2]);
    expect(b.meanNll).toBeCloseTo(a.meanNll, 12);
    const r = fakeRunner();
    const progress: string[] = [];
    const c = await evaluatePerplexity(r, ids, { seqlen: 10, batch: 2, maxWindows: 3, onProgress: (d, t) => progress.push(`${d}/${t}`) });
    expect(c.windows).toBe(3);
    expect(c.tokens).toBe(27);
    expect(progress).toEqual(['0/3', '2/3', '3/3']);
  });

  test('text shorter than one window is an error', async () => {
    await expect(evaluatePerplexity(fakeRunner(), ids.subarray(0, 9), { seqlen: 10 })).rejects.toThrow(/9 tokens, fewer than one window of 10/);
    expect(windowCount(9, 10)).toBe(0);
    expect(windowCount(110207, 1024)).toBe(107);
  });
});

describe('resolveSeqlen', () => {
  test('default 2048 clamped to max_position_embeddings; explicit above it is an error', () => {
    expect(resolveSeqlen(undefined, 1024, 'c.json')).toBe(1024);
    expect(resolveSeqlen(undefined, 4096, 'c.json')).toBe(2048);
    expect(resolveSeqlen(512, 1024, 'c.json')).toBe(512);
    expect(() => resolveSeqlen(2048, 1024, 'c.json')).toThrow(BwqError);
    expect(() => resolveSeqlen(2048, 1024, 'c.json')).toThrow(/exceeds the model's max_position_embeddings 1024/);
  });
});

describe('native backend loading', () => {
  test('a missing native forward module is reported as "native backend not built"', async () => {
    const { importNativeForward } = await import('../../src/eval/backend.js');
    await expect(importNativeForward('../native/does-not-exist.js')).rejects.toThrow(/^native backend not built$/);
    // a module without createNativeModelRunner is not a backend either
    await expect(importNativeForward('./seqlen.js')).rejects.toThrow(/^native backend not built$/);
  });
});
