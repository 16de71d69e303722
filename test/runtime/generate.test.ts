/**
 * src/runtime/generate.ts with a fake session (scripted next tokens) and a fake byte-level tokenizer
 * (id k < 256 is byte k; decode is UTF-8 with U+FFFD for an incomplete sequence, like byte-level BPE):
 * streaming, stop rules, the forward calls made, UTF-8 hold-back, timings.
 */
import { describe, expect, test } from 'vitest';
import { BwqError } from '../../src/errors.js';
import type { ModelConfig } from '../../src/model/config.js';
import { generate, type GenerateOptions, type GenerateSession } from '../../src/runtime/generate.js';
import type { LogitsWanted } from '../../src/runtime/session.js';
import { TextStream } from '../../src/runtime/text-stream.js';

const EOS = 256;
const VOCAB = 257;

const byteTokenizer = {
  decode: (ids: ArrayLike<number>): string => new TextDecoder('utf-8').decode(Uint8Array.from(Array.from(ids).filter((id) => id < 256))),
};

interface Call {
  ids: number[];
  t: number;
  logits: LogitsWanted;
  position: number;
}

/** A session whose k-th forward returns one-hot logits for script[k]. */
function fakeSession(script: number[], maxPositionEmbeddings = 1024, maxSeq = maxPositionEmbeddings) {
  const calls: Call[] = [];
  let resets = 0;
  let position = 0;
  const session: GenerateSession & { calls: Call[]; resets: () => number } = {
    config: { maxPositionEmbeddings, vocabSize: VOCAB } as ModelConfig,
    batch: 1,
    maxSeq,
    calls,
    resets: () => resets,
    reset() {
      resets++;
      position = 0;
    },
    forward(ids: Int32Array, t: number, logits: LogitsWanted): Float32Array {
      calls.push({ ids: Array.from(ids), t, logits, position });
      position += t;
      if (position > maxSeq) throw new Error(`cache overflow: position ${position} > ${maxSeq}`);
      const out = new Float32Array(VOCAB).fill(-5);
      const next = script[calls.length - 1];
      if (next === undefined) throw new Error('script exhausted');
      out[next] = 5;
      return out;
    },
  };
  return session;
}

const bytes = (s: string): number[] => Array.from(new TextEncoder().encode(s));
const PROMPT = Int32Array.from(bytes('Hi, '));
const options = (o: Partial<GenerateOptions> = {}): GenerateOptions => ({ maxNewTokens: 64, temperature: 0, topP: 1, seed: 0, eosTokenIds: [EOS], ...o });

describe('generate', () => {
  test('prefills once, then one one-token forward per new token; streams every piece', () => {
    const session = fakeSession(bytes('hello'));
    const pieces: string[] = [];
    const r = generate(session, byteTokenizer, PROMPT, options({ maxNewTokens: 5 }), (s) => pieces.push(s));
    expect(pieces).toEqual(['h', 'e', 'l', 'l', 'o']);
    expect(r.text).toBe('hello');
    expect(r.tokens).toEqual(bytes('hello'));
    expect(r.stopReason).toBe('max-new-tokens');
    expect(session.resets()).toBe(1);
    expect(session.calls).toEqual([
      { ids: Array.from(PROMPT), t: 4, logits: 'last', position: 0 },
      ...bytes('hell').map((id, i) => ({ ids: [id], t: 1, logits: 'last', position: 4 + i })),
    ]);
    expect(r.promptTokens).toBe(4);
    expect(r.prefill.tokens).toBe(4);
    expect(r.decode.tokens).toBe(4); // the last token is not fed back
    for (const p of [r.prefill, r.decode]) {
      expect(p.seconds).toBeGreaterThanOrEqual(0);
      expect(p.tokensPerSecond).toBe(p.seconds > 0 ? p.tokens / p.seconds : 0);
    }
  });

  test('stops at eos (any of a list) without emitting it', () => {
    const session = fakeSession([...bytes('hi'), EOS, ...bytes('xyz')]);
    const pieces: string[] = [];
    const r = generate(session, byteTokenizer, PROMPT, options({ eosTokenIds: [7, EOS] }), (s) => pieces.push(s));
    expect(r.stopReason).toBe('eos');
    expect(r.tokens).toEqual(bytes('hi'));
    expect(r.text).toBe('hi');
    expect(pieces.join('')).toBe('hi');
    expect(session.calls).toHaveLength(3);
    expect(r.decode.tokens).toBe(2);
  });

  test('eos as the very first token: empty text, no decode forwards', () => {
    const session = fakeSession([EOS]);
    const pieces: string[] = [];
    const r = generate(session, byteTokenizer, PROMPT, options(), (s) => pieces.push(s));
    expect(r).toMatchObject({ tokens: [], text: '', stopReason: 'eos', decode: { tokens: 0, seconds: 0, tokensPerSecond: 0 } });
    expect(pieces).toEqual([]);
  });

  test('stops when prompt + generated fill max_position_embeddings (never feeds position >= the limit)', () => {
    const session = fakeSession(bytes('abcdefgh'), 7);
    const r = generate(session, byteTokenizer, PROMPT, options(), () => {});
    expect(r.stopReason).toBe('max-positions');
    expect(r.tokens).toEqual(bytes('abc')); // 4 + 3 = 7 positions
    expect(session.calls.at(-1)!.position).toBe(5);
  });

  test("the session's smaller maxSeq is the limit too; max-new-tokens wins a tie", () => {
    const r = generate(fakeSession(bytes('abcdefgh'), 1024, 6), byteTokenizer, PROMPT, options(), () => {});
    expect(r).toMatchObject({ stopReason: 'max-positions', tokens: bytes('ab') });
    const tie = generate(fakeSession(bytes('abcdefgh'), 6), byteTokenizer, PROMPT, options({ maxNewTokens: 2 }), () => {});
    expect(tie).toMatchObject({ stopReason: 'max-new-tokens', tokens: bytes('ab') });
  });

  test('holds back an incomplete UTF-8 sequence until it completes', () => {
    const euro = bytes('€'); // E2 82 AC, one token per byte
    const pieces: string[] = [];
    const r = generate(fakeSession([...bytes('a'), ...euro, ...bytes('b'), EOS]), byteTokenizer, PROMPT, options(), (s) => pieces.push(s));
    expect(pieces).toEqual(['a', '€', 'b']);
    expect(r.text).toBe('a€b');
  });

  test('flushes an incomplete trailing sequence at the end (as U+FFFD)', () => {
    const pieces: string[] = [];
    const r = generate(fakeSession([...bytes('a'), ...bytes('€').slice(0, 2)]), byteTokenizer, PROMPT, options({ maxNewTokens: 3 }), (s) => pieces.push(s));
    expect(pieces).toEqual(['a', '\uFFFD']);
    expect(r.text).toBe('a\uFFFD');
  });

  test('temperature sampling through the loop: same seed, same tokens', () => {
    // A session whose logits are always the same spread-out row.
    const spread = (): GenerateSession => ({
      config: { maxPositionEmbeddings: 1024 } as ModelConfig,
      batch: 1,
      maxSeq: 1024,
      reset() {},
      forward: () => Float32Array.from({ length: VOCAB }, (_, i) => (i >= 97 && i < 123 ? 1 : -20)),
    });
    const run = (seed: number) => generate(spread(), byteTokenizer, PROMPT, options({ temperature: 1, topP: 0.9, seed, maxNewTokens: 16 })).tokens;
    expect(run(5)).toEqual(run(5));
    expect(run(5)).not.toEqual(run(6));
    for (const id of run(5)) expect(id >= 97 && id < 123).toBe(true);
  });

  test('rejects a prompt that leaves no room, an empty prompt and a batched session', () => {
    expect(() => generate(fakeSession([1], 4), byteTokenizer, PROMPT, options())).toThrow(BwqError);
    expect(() => generate(fakeSession([1], 4), byteTokenizer, PROMPT, options())).toThrow(/4 tokens; the model holds 4 positions/);
    expect(() => generate(fakeSession([1]), byteTokenizer, new Int32Array(0), options())).toThrow(/no tokens/);
    expect(() => generate({ ...fakeSession([1]), batch: 2 }, byteTokenizer, PROMPT, options())).toThrow(/batch 1/);
  });
});

describe('TextStream', () => {
  test('hands out only the new suffix, holds back a trailing U+FFFD, flushes at finish', () => {
    const stream = new TextStream(byteTokenizer);
    const [e1, e2, e3, e4] = bytes('😀'); // F0 9F 98 80
    expect(stream.push(bytes('x')[0]!)).toBe('x');
    expect(stream.push(e1!)).toBe('');
    expect(stream.push(e2!)).toBe('');
    expect(stream.push(e3!)).toBe('');
    expect(stream.push(e4!)).toBe('😀');
    expect(stream.finish()).toBe('');
    expect(stream.push(e1!)).toBe('');
    expect(stream.finish()).toBe('\uFFFD');
    expect(stream.decoded).toBe('x😀\uFFFD');
  });
});
