/**
 * The autoregressive generation loop over a RuntimeSession (batch 1): prefill the prompt in one
 * forward, then one one-token forward per new token, choosing each token with src/runtime/sampling.ts
 * and streaming text through src/runtime/text-stream.ts. Stops at an eos id (not emitted), at
 * maxNewTokens, or when the sequence fills the model's positions (docs/GENERATE.md).
 */
import { BwqError } from '../errors.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { createRandom, sampleToken, type SamplingOptions } from './sampling.js';
import type { RuntimeSession } from './session.js';
import { TextStream } from './text-stream.js';

export type GenerateSession = Pick<RuntimeSession, 'config' | 'batch' | 'maxSeq' | 'reset' | 'forward'>;

export interface GenerateOptions extends SamplingOptions {
  /** At least 1. */
  maxNewTokens: number;
  /** PRNG seed for temperature > 0 (mulberry32, taken modulo 2^32). */
  seed: number;
  /** Token ids that end generation (not emitted). */
  eosTokenIds: readonly number[];
  /** Most positions prompt + generated may fill; default min(max_position_embeddings, session.maxSeq). */
  maxPositions?: number;
}

export type StopReason = 'max-new-tokens' | 'eos' | 'max-positions';

export interface PhaseTiming {
  tokens: number;
  seconds: number;
  /** tokens / seconds (0 when no time was measured). */
  tokensPerSecond: number;
}

export interface GenerateResult {
  promptTokens: number;
  /** Generated ids, eos excluded. */
  tokens: number[];
  /** tokenizer.decode(tokens). */
  text: string;
  /** The prompt forward plus the choice of the first token. */
  prefill: PhaseTiming;
  /** The one-token forwards, each with the choice of the token after it (tokens = forwards). */
  decode: PhaseTiming;
  stopReason: StopReason;
}

function phase(tokens: number, milliseconds: number): PhaseTiming {
  const seconds = milliseconds / 1000;
  return { tokens, seconds, tokensPerSecond: seconds > 0 ? tokens / seconds : 0 };
}

/**
 * Generates from `promptIds` (non-empty, shorter than the position limit). `onText` gets the text as
 * it becomes printable (see TextStream); the pieces concatenate to the result's text.
 */
export function generate(
  session: GenerateSession,
  tokenizer: Pick<TextTokenizer, 'decode'>,
  promptIds: Int32Array,
  options: GenerateOptions,
  onText?: (text: string) => void,
): GenerateResult {
  const n = promptIds.length;
  const limit = options.maxPositions ?? Math.min(session.config.maxPositionEmbeddings, session.maxSeq);
  if (session.batch !== 1) throw new Error(`generate needs a session of batch 1, got ${session.batch}`);
  if (n === 0) throw new BwqError('the prompt has no tokens', { exitCode: 2 });
  if (n >= limit) {
    throw new BwqError(`the prompt has ${n} tokens; the model holds ${limit} positions, so it must have fewer to leave room for one new token`, { exitCode: 2 });
  }
  if (!(Number.isInteger(options.maxNewTokens) && options.maxNewTokens >= 1)) {
    throw new RangeError(`maxNewTokens must be a positive integer, got ${options.maxNewTokens}`);
  }
  const eos = new Set(options.eosTokenIds);
  const random = createRandom(options.seed);
  const stream = new TextStream(tokenizer);
  const emit = (piece: string): void => {
    if (piece !== '' && onText !== undefined) onText(piece);
  };

  session.reset();
  let start = performance.now();
  let next = sampleToken(session.forward(promptIds, n, 'last'), options, random);
  const prefillMs = performance.now() - start;

  const tokens: number[] = [];
  let decodeMs = 0;
  let decodeSteps = 0;
  let stopReason: StopReason;
  for (;;) {
    if (eos.has(next)) {
      stopReason = 'eos';
      break;
    }
    tokens.push(next);
    emit(stream.push(next));
    if (tokens.length >= options.maxNewTokens) {
      stopReason = 'max-new-tokens';
      break;
    }
    if (n + tokens.length >= limit) {
      stopReason = 'max-positions';
      break;
    }
    start = performance.now();
    next = sampleToken(session.forward(Int32Array.of(next), 1, 'last'), options, random);
    decodeMs += performance.now() - start;
    decodeSteps++;
  }
  emit(stream.finish());
  return {
    promptTokens: n,
    tokens,
    text: stream.decoded,
    prefill: phase(n, prefillMs),
    decode: phase(decodeSteps, decodeMs),
    stopReason,
  };
}
