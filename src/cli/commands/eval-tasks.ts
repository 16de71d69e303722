/**
 * `bwq eval [MODEL_DIR] --tasks FILE.jsonl`: zero-shot multiple-choice accuracy by log-likelihood, as
 * lm-eval-harness computes it (src/eval/tasks.ts, docs/EVAL.md). No perplexity is computed in this mode.
 */
import { resolve } from 'node:path';
import { BwqError, usageError } from '../../errors.js';
import { openModelDir } from '../../model/model-dir.js';
import { loadTokenizer } from '../../model/tokenizer.js';
import { createRunner, EVAL_BACKENDS, NATIVE_DEVICES, type EvalBackend, type NativeDevice } from '../../eval/backend.js';
import { readTaskFile } from '../../eval/task-file.js';
import { evaluateTasks } from '../../eval/tasks.js';
import type { QuestionScore, TaskMetrics } from '../../eval/task-metrics.js';
import { DEFAULT_MODEL_DIR } from '../../package-paths.js';
import { defaultThreads } from '../../onnx/session.js';
import { parseIntegerFlag } from '../output.js';
import { createProgress } from '../progress.js';

export interface TaskEvalFlags {
  tasks?: string;
  seqlen?: string;
  batch?: string;
  threads?: string;
  backend?: string;
  device?: string;
  bos?: boolean;
  json?: boolean;
  dataset?: string;
  textField?: string;
  maxWindows?: string;
  kld?: string;
}

export interface TaskEvalSummary {
  model: string;
  tasksFile: string;
  backend: EvalBackend;
  /** longest model input; longer inputs lose context tokens on the left */
  maxLength: number;
  bos: number | null;
  batch: number;
  threads: number;
  tasks: TaskMetrics[];
  overall: TaskMetrics;
  sequences: number;
  tokens: number;
  truncated: number;
  seconds: number;
  questions: QuestionScore[];
}

/** Flags that belong to the perplexity mode only. */
const PERPLEXITY_ONLY: readonly [keyof TaskEvalFlags, string][] = [
  ['dataset', '--dataset'], ['textField', '--text-field'], ['maxWindows', '--max-windows'], ['kld', '--kld'],
];

export async function runTaskEval(modelArg: string | undefined, flags: TaskEvalFlags): Promise<TaskEvalSummary> {
  if (flags.tasks === undefined) throw usageError('--tasks FILE is required');
  for (const [key, flag] of PERPLEXITY_ONLY) {
    if (flags[key] !== undefined) throw usageError(`${flag} does not apply with --tasks (no perplexity is computed)`);
  }
  const backend = (flags.backend ?? 'onnx') as EvalBackend;
  if (!EVAL_BACKENDS.includes(backend)) throw usageError(`--backend must be one of ${EVAL_BACKENDS.join(', ')}, got "${flags.backend}"`);
  const explicitLength = flags.seqlen === undefined ? undefined : parseIntegerFlag('--seqlen', flags.seqlen, 2);
  const batch = flags.batch === undefined ? 1 : parseIntegerFlag('--batch', flags.batch, 1);
  const threads = flags.threads === undefined ? defaultThreads() : parseIntegerFlag('--threads', flags.threads, 1);
  const device = (flags.device ?? 'auto') as NativeDevice;
  if (!NATIVE_DEVICES.includes(device)) throw usageError(`--device must be one of ${NATIVE_DEVICES.join(', ')}, got "${flags.device}"`);
  if (flags.device !== undefined && backend !== 'native') throw usageError('--device applies to --backend native only');
  const modelDir = modelArg === undefined ? DEFAULT_MODEL_DIR : resolve(modelArg);
  const tasksFile = resolve(flags.tasks);

  const questions = await readTaskFile(tasksFile);
  const model = await openModelDir(modelDir);
  try {
    const configFile = resolve(modelDir, 'config.json');
    const maxPositions = model.config.maxPositionEmbeddings;
    if (explicitLength !== undefined && explicitLength > maxPositions) {
      throw new BwqError(`--seqlen ${explicitLength} exceeds the model's max_position_embeddings ${maxPositions}`, { file: configFile, exitCode: 2 });
    }
    const maxLength = explicitLength ?? maxPositions;
    const bos = flags.bos === true ? bosTokenId(model.config.raw, model.config.vocabSize, configFile) : undefined;
    const tokenizer = await loadTokenizer(modelDir);
    const progress = createProgress({ quiet: flags.json === true });
    const runner = await createRunner(model, backend, { threads, device });
    try {
      progress.start(`scoring ${questions.length} questions`);
      const result = await evaluateTasks(runner, tokenizer, questions, {
        maxLength, vocabSize: model.config.vocabSize, file: tasksFile, batch,
        ...(bos === undefined ? {} : { bos }),
        onProgress: (done, total) => progress.update(done, total, 'choices'),
      });
      progress.succeed(`scored ${result.sequences} choices of ${questions.length} questions in ${result.seconds.toFixed(1)} s`);
      return { model: modelDir, tasksFile, backend, maxLength, bos: bos ?? null, batch, threads, ...result };
    } catch (error) {
      progress.fail();
      throw error;
    } finally {
      await runner.close();
    }
  } finally {
    await model.checkpoint.close();
  }
}

/** config.json's bos_token_id, for --bos. */
function bosTokenId(raw: Record<string, unknown>, vocabSize: number, configFile: string): number {
  const id = raw['bos_token_id'];
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new BwqError(`--bos needs an integer bos_token_id below the vocabulary size ${vocabSize}, found ${JSON.stringify(id ?? null)}`, { file: configFile });
  }
  return id;
}

function percent(value: number, stderr: number | null): string {
  return `${(100 * value).toFixed(2).padStart(10)} ± ${stderr === null ? '—'.padStart(5) : (100 * stderr).toFixed(2).padStart(5)}`;
}

export function formatTaskEval(s: TaskEvalSummary): string {
  const width = Math.max(4, ...s.tasks.map((t) => t.task.length));
  const row = (t: TaskMetrics): string =>
    `${t.task.padEnd(width)}  ${String(t.questions).padStart(9)}  ${percent(t.acc, t.accStderr)}  ${percent(t.accNorm, t.accNormStderr)}`;
  return [
    `model       ${s.model}`,
    `tasks       ${s.tasksFile}`,
    `backend     ${s.backend}`,
    `inputs      ${s.sequences} choices, ${s.tokens} tokens, at most ${s.maxLength} per input${s.truncated > 0 ? ` (${s.truncated} cut on the left)` : ''}${s.bos === null ? '' : `, BOS ${s.bos} first`}`,
    `time        ${s.seconds.toFixed(2)} s`,
    '',
    `${'task'.padEnd(width)}  questions  ${'acc %'.padStart(10)} ± ${'s.e.'.padStart(5)}  ${'acc_norm %'.padStart(10)} ± ${'s.e.'.padStart(5)}`,
    ...s.tasks.map(row),
    ...(s.tasks.length > 1 ? [row(s.overall)] : []),
  ].join('\n');
}
