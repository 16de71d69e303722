/**
 * Multiple-choice accuracy as lm-eval-harness reports it, from each choice's log-likelihood ll_i:
 *
 *   acc      = [argmax_i ll_i == gold]
 *   acc_norm = [argmax_i ll_i / len(text_i) == gold]    len = characters (code points) of the choice text
 *                                                        (TaskQuestion.choiceTexts), lm-eval's `len(choice)`
 *
 * (argmax: the first of equal maxima, as numpy's), averaged over the questions of a task, with the standard
 * error of the mean sqrt(Σ (x − mean)² / (n − 1)) / sqrt(n) (lm-eval's `mean_stderr`; null when n < 2).
 */
import type { TaskQuestion } from './task-file.js';
import { pythonLength } from './python-whitespace.js';

export interface QuestionScore {
  task: string;
  line: number;
  /** log-likelihood of each choice's continuation */
  logliks: number[];
  gold: number;
  /** argmax of logliks */
  pred: number;
  /** argmax of logliks / choice length */
  predNorm: number;
}

export interface TaskMetrics {
  task: string;
  questions: number;
  acc: number;
  accStderr: number | null;
  accNorm: number;
  accNormStderr: number | null;
}

function argmax(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

export function scoreQuestion(q: TaskQuestion, logliks: number[]): QuestionScore {
  const normalized = logliks.map((ll, i) => ll / pythonLength(q.choiceTexts[i]!));
  return { task: q.task, line: q.line, logliks, gold: q.gold, pred: argmax(logliks), predNorm: argmax(normalized) };
}

/** Mean and standard error of the mean (sample standard deviation / √n; null below 2 values). */
export function meanStderr(values: readonly number[]): { mean: number; stderr: number | null } {
  const n = values.length;
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / n;
  if (n < 2) return { mean, stderr: null };
  let ss = 0;
  for (const v of values) ss += (v - mean) ** 2;
  return { mean, stderr: Math.sqrt(ss / (n - 1)) / Math.sqrt(n) };
}

export function taskMetrics(task: string, scores: readonly QuestionScore[]): TaskMetrics {
  const acc = meanStderr(scores.map((s) => (s.pred === s.gold ? 1 : 0)));
  const accNorm = meanStderr(scores.map((s) => (s.predNorm === s.gold ? 1 : 0)));
  return { task, questions: scores.length, acc: acc.mean, accStderr: acc.stderr, accNorm: accNorm.mean, accNormStderr: accNorm.stderr };
}

/** Metrics per task (in the order tasks first appear) and over all questions together. */
export function summarizeScores(scores: readonly QuestionScore[]): { tasks: TaskMetrics[]; overall: TaskMetrics } {
  const byTask = new Map<string, QuestionScore[]>();
  for (const s of scores) {
    let list = byTask.get(s.task);
    if (list === undefined) byTask.set(s.task, (list = []));
    list.push(s);
  }
  return {
    tasks: [...byTask].map(([task, list]) => taskMetrics(task, list)),
    overall: taskMetrics('all', scores),
  };
}
