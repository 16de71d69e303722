/**
 * Multiple-choice questions → token sequences to score, as lm-eval-harness does for causal models:
 *
 *  1. `_encode_pair(context, continuation)`: trailing whitespace of the context (Python's `rstrip`) moves to the
 *     front of the continuation; then `whole = encode(context + continuation)`, `ctx = encode(context)` and the
 *     continuation's tokens are `whole[len(ctx):]` (no special tokens; with `bos`, that id first in both).
 *  2. The model input is `(ctx + cont)[-(maxLength + 1):][:-1]`: the last token is dropped (nothing predicts
 *     after it) and a sequence longer than `maxLength + 1` loses tokens of its context from the left.
 *  3. The choice's log-likelihood is Σ_k log p(cont[k] | everything before it), read at the last `len(cont)`
 *     positions of the input (src/eval/tasks.ts).
 */
import { BwqError } from '../errors.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { TaskQuestion } from './task-file.js';
import { pythonRstrip } from './python-whitespace.js';

export interface EncodedPair {
  context: Int32Array;
  continuation: Int32Array;
}

/**
 * lm-eval's `_encode_pair` for a causal model (the context is not empty). `contextIds`, when given, is
 * `encode(rstrip(context))` already computed (choices that share a context encode it once).
 */
export function encodePair(tokenizer: Pick<TextTokenizer, 'encode'>, context: string, continuation: string,
  contextIds?: Int32Array): EncodedPair {
  const stripped = pythonRstrip(context);
  const cont = context.slice(stripped.length) + continuation;
  const ctx = contextIds ?? tokenizer.encode(stripped);
  const whole = tokenizer.encode(stripped + cont);
  return { context: ctx, continuation: whole.slice(ctx.length) };
}

/** One choice of one question, ready for the model. */
export interface ScoredSequence {
  question: number;
  choice: number;
  /** model input, at most maxLength tokens */
  ids: Int32Array;
  /** the continuation's tokens, predicted at the last `target.length` positions of `ids` */
  target: Int32Array;
  /** context tokens cut off on the left (0 unless the sequence was longer than maxLength + 1) */
  truncated: number;
}

export interface RequestOptions {
  /** longest model input (lm-eval's max_length: the model's max_position_embeddings by default) */
  maxLength: number;
  /** token id put before every context (lm-eval's add_bos_token=True); none by default */
  bos?: number;
  vocabSize: number;
  /** the task file, named in errors */
  file: string;
}

/** Every (question, choice) of `questions` as a model input and its target tokens. */
export function buildSequences(questions: readonly TaskQuestion[], tokenizer: Pick<TextTokenizer, 'encode'>,
  options: RequestOptions): ScoredSequence[] {
  const { maxLength, bos, vocabSize, file } = options;
  const sequences: ScoredSequence[] = [];
  questions.forEach((q, question) => {
    const contexts = new Map<string, Int32Array>(); // a context shared by the choices is encoded once
    q.pairs.forEach(({ context, continuation }, choice) => {
      const fail = (problem: string): BwqError => new BwqError(`line ${q.line}: choice ${choice}: ${problem}`, { file });
      const key = pythonRstrip(context);
      let encoded = contexts.get(key);
      if (encoded === undefined) {
        encoded = tokenizer.encode(key);
        contexts.set(key, encoded);
      }
      const pair = encodePair(tokenizer, context, continuation, encoded);
      if (pair.context.length === 0) throw fail('the context encodes to no tokens');
      if (pair.continuation.length === 0) throw fail('the continuation has no tokens of its own (the tokenizer merged it into the context)');
      if (pair.continuation.length > maxLength) {
        throw fail(`the continuation has ${pair.continuation.length} tokens, more than the ${maxLength} the model can take`);
      }
      const prefix = bos === undefined ? pair.context : Int32Array.of(bos, ...pair.context);
      const all = new Int32Array(prefix.length + pair.continuation.length);
      all.set(prefix);
      all.set(pair.continuation, prefix.length);
      for (const id of all) {
        if (id < 0 || id >= vocabSize) throw fail(`the tokenizer produced id ${id}, outside the model's vocabulary (${vocabSize})`);
      }
      const keep = Math.min(all.length, maxLength + 1);
      sequences.push({
        question, choice,
        ids: all.slice(all.length - keep, all.length - 1),
        target: pair.continuation,
        truncated: all.length - keep,
      });
    });
  });
  return sequences;
}
