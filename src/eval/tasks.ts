/**
 * `bwq eval --tasks FILE.jsonl`: zero-shot multiple choice by log-likelihood, as lm-eval-harness scores it
 * (docs/EVAL.md). Every choice of every question becomes one model input (src/eval/task-requests.ts); its
 * log-likelihood is Σ_k log softmax(z_{p_k})[cont_k] over the positions p_k that predict the continuation's
 * tokens (log-softmax in double over float32 logits); acc and acc_norm follow (src/eval/task-metrics.ts).
 *
 * Inputs run longest first, in batches of up to `batch` inputs of the *same* length (no padding, so a choice's
 * score does not depend on what shares its batch, whatever the model's quantizers), and no more than
 * LOGITS_BUDGET logits per call.
 */
import type { ModelRunner } from '../onnx/model-runner.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import type { TaskQuestion } from './task-file.js';
import { buildSequences, type RequestOptions, type ScoredSequence } from './task-requests.js';
import { scoreQuestion, summarizeScores, type QuestionScore, type TaskMetrics } from './task-metrics.js';

/** Largest number of float logits one forward call may return (256 MiB); a single input may exceed it. */
export const LOGITS_BUDGET = 1 << 26;

export interface TaskEvalOptions extends RequestOptions {
  /** inputs per forward call (default 1) */
  batch?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface TaskEvalResult {
  tasks: TaskMetrics[];
  overall: TaskMetrics;
  questions: QuestionScore[];
  /** model inputs run: one per choice */
  sequences: number;
  /** input tokens run */
  tokens: number;
  /** inputs whose context was cut on the left to fit maxLength */
  truncated: number;
  seconds: number;
}

/** Log-likelihood of each sequence's target (Float64Array indexed like `sequences`). */
export async function scoreSequences(runner: Pick<ModelRunner, 'logits' | 'config'>, sequences: readonly ScoredSequence[],
  options: { batch?: number; onProgress?: (done: number, total: number) => void } = {}): Promise<Float64Array> {
  const batch = options.batch ?? 1;
  if (!Number.isInteger(batch) || batch < 1) throw new Error(`batch must be a positive integer, got ${batch}`);
  const V = runner.config.vocabSize;
  const order = sequences.map((_, i) => i).sort((a, b) => sequences[b]!.ids.length - sequences[a]!.ids.length || a - b);
  const out = new Float64Array(sequences.length);
  let done = 0;
  options.onProgress?.(0, sequences.length);
  for (let start = 0; start < order.length;) {
    const seq = sequences[order[start]!]!.ids.length;
    const limit = Math.min(batch, Math.max(1, Math.floor(LOGITS_BUDGET / (seq * V))));
    let end = start + 1;
    while (end < order.length && end - start < limit && sequences[order[end]!]!.ids.length === seq) end++;
    const rows = order.slice(start, end);
    const ids = new Int32Array(rows.length * seq);
    rows.forEach((s, r) => ids.set(sequences[s]!.ids, r * seq));
    const logits = await runner.logits(ids, rows.length, seq);
    rows.forEach((s, r) => {
      const { target } = sequences[s]!;
      let ll = 0;
      for (let k = 0; k < target.length; k++) {
        const position = seq - target.length + k;
        ll += logProb(logits, (r * seq + position) * V, V, target[k]!);
      }
      out[s] = ll;
    });
    done += rows.length;
    options.onProgress?.(done, sequences.length);
    start = end;
  }
  return out;
}

/** log softmax(row)[token] in double, row = x[offset, offset + n). */
function logProb(x: Float32Array, offset: number, n: number, token: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, x[offset + i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[offset + i]! - max);
  return x[offset + token]! - max - Math.log(sum);
}

/** Scores every question of a task file with `runner` (tokenized with `tokenizer`). */
export async function evaluateTasks(runner: Pick<ModelRunner, 'logits' | 'config'>, tokenizer: Pick<TextTokenizer, 'encode'>,
  questions: readonly TaskQuestion[], options: TaskEvalOptions): Promise<TaskEvalResult> {
  const sequences = buildSequences(questions, tokenizer, options);
  const start = performance.now();
  const logliks = await scoreSequences(runner, sequences, {
    ...(options.batch === undefined ? {} : { batch: options.batch }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  });
  const seconds = (performance.now() - start) / 1000;
  const perQuestion = questions.map((q) => new Array<number>(q.pairs.length).fill(0));
  let tokens = 0;
  let truncated = 0;
  sequences.forEach((s, i) => {
    perQuestion[s.question]![s.choice] = logliks[i]!;
    tokens += s.ids.length;
    if (s.truncated > 0) truncated++;
  });
  const scores = questions.map((q, i) => scoreQuestion(q, perQuestion[i]!));
  return { ...summarizeScores(scores), questions: scores, sequences: sequences.length, tokens, truncated, seconds };
}
