/**
 * `bwq eval [MODEL_DIR]`: perplexity of a (float or simulated-quantized) model on a text, with
 * the GPTQ/QuaRot protocol (non-overlapping windows, see src/eval/perplexity.ts).
 */
import type { Command } from 'commander';
import { resolve } from 'node:path';
import { BwqError, GATE_FAILED_EXIT_CODE, usageError } from '../../errors.js';
import { openModelDir, type ModelDir } from '../../model/model-dir.js';
import { loadTokenizer } from '../../model/tokenizer.js';
import { createRunner, EVAL_BACKENDS, NATIVE_DEVICES, type EvalBackend, type NativeDevice } from '../../eval/backend.js';
import { loadEvalTokens } from '../../eval/dataset.js';
import { WIKITEXT2_FILE, WIKITEXT2_NAME } from '../../eval/wikitext.js';
import { evaluatePerplexity, windowCount } from '../../eval/perplexity.js';
import { evaluateKld } from '../../eval/kld.js';
import { DEFAULT_EVAL_DATASET, DEFAULT_MODEL_DIR } from '../../package-paths.js';
import { resolveSeqlen } from '../../eval/seqlen.js';
import { defaultThreads } from '../../onnx/session.js';
import { parseIntegerFlag, printResult } from '../output.js';
import { createProgress } from '../progress.js';
import { parseGateFlags, type GateFlags } from '../gate-flags.js';
import { checkGates, describeGate, enforceGates, type GateResult } from '../../eval/gates.js';
import { formatTaskEval, runTaskEval } from './eval-tasks.js';
import { DEFAULT_TEXT_FIELD, parseTextField, TEXT_FIELD_HELP } from '../text-field-flag.js';

interface EvalFlags extends GateFlags {
  dataset?: string;
  textField?: string;
  seqlen?: string;
  maxWindows?: string;
  batch?: string;
  threads?: string;
  backend?: string;
  device?: string;
  kld?: string;
  tasks?: string;
  bos?: boolean;
  json?: boolean;
}

export interface EvalSummary {
  model: string;
  dataset: string;
  backend: EvalBackend;
  seqlen: number;
  windows: number;
  tokens: number;
  ppl: number;
  meanNll: number;
  seconds: number;
  tokensPerSecond: number;
  batch: number;
  threads: number;
  /** with --kld BASE_DIR: KL divergence against the base model on the same windows (src/eval/kld.ts) */
  kld?: {
    base: string; basePpl: number; mean: number; median: number; p99: number; max: number;
    top1Agreement: number; meanDeltaP: number;
  };
  /** with --max-ppl, --max-ppl-ratio, --max-kld: each quality gate, measured (src/eval/gates.ts) */
  gates?: GateResult[];
}

export async function runEval(modelArg: string | undefined, flags: EvalFlags): Promise<EvalSummary> {
  const backend = (flags.backend ?? 'onnx') as EvalBackend;
  if (!EVAL_BACKENDS.includes(backend)) throw usageError(`--backend must be one of ${EVAL_BACKENDS.join(', ')}, got "${flags.backend}"`);
  const explicitSeqlen = flags.seqlen === undefined ? undefined : parseIntegerFlag('--seqlen', flags.seqlen, 2);
  const maxWindows = flags.maxWindows === undefined ? undefined : parseIntegerFlag('--max-windows', flags.maxWindows, 1);
  const batch = flags.batch === undefined ? 1 : parseIntegerFlag('--batch', flags.batch, 1);
  const threads = flags.threads === undefined ? defaultThreads() : parseIntegerFlag('--threads', flags.threads, 1);
  const device = (flags.device ?? 'auto') as NativeDevice;
  if (!NATIVE_DEVICES.includes(device)) throw usageError(`--device must be one of ${NATIVE_DEVICES.join(', ')}, got "${flags.device}"`);
  if (flags.device !== undefined && backend !== 'native') throw usageError('--device applies to --backend native only');
  const modelDir = modelArg === undefined ? DEFAULT_MODEL_DIR : resolve(modelArg);
  const dataset = flags.dataset === undefined ? DEFAULT_EVAL_DATASET
    : flags.dataset === WIKITEXT2_NAME ? WIKITEXT2_FILE : resolve(flags.dataset);

  const model = await openModelDir(modelDir);
  try {
    const seqlen = resolveSeqlen(explicitSeqlen, model.config.maxPositionEmbeddings, resolve(modelDir, 'config.json'));
    const tokenizer = await loadTokenizer(modelDir);
    const ids = await loadEvalTokens(dataset, tokenizer, parseTextField(flags.textField));
    if (windowCount(ids.length, seqlen) < 1) {
      throw new BwqError(`text has ${ids.length} tokens, fewer than one window of ${seqlen} (lower --seqlen)`, { file: dataset });
    }
    for (const id of ids) {
      if (id >= model.config.vocabSize) {
        throw new BwqError(`tokenizer produced id ${id} outside the model's vocabulary (${model.config.vocabSize})`, { file: resolve(modelDir, 'tokenizer.json') });
      }
    }
    const progress = createProgress({ quiet: flags.json === true });
    // --base (the model of --max-ppl-ratio) runs the same pass as --kld: both models on the same windows
    const baseDir = flags.kld ?? flags.base;
    if (baseDir !== undefined) return await runKld(model, modelDir, resolve(baseDir), dataset, ids, seqlen, backend, batch, threads, device, maxWindows, progress);
    const runner = await createRunner(model, backend, { threads, device });
    try {
      // Build the session outside the timing (a 2-token forward pass).
      progress.start('loading model');
      await runner.nll(ids.subarray(0, 2), 1, 2);
      progress.start(`eval ${seqlen}-token windows`);
      const result = await evaluatePerplexity(runner, ids, {
        seqlen,
        batch,
        ...(maxWindows === undefined ? {} : { maxWindows }),
        onProgress: (done, total) => progress.update(done, total, 'windows'),
      });
      progress.succeed(`evaluated ${result.windows} windows in ${result.seconds.toFixed(1)} s`);
      return { model: modelDir, dataset, backend, batch, threads, ...result };
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

/** `--kld BASE_DIR`: both models on the same windows, one pass; perplexity and KL divergence together. */
async function runKld(model: ModelDir, modelDir: string, baseDir: string, dataset: string, ids: Int32Array, seqlen: number,
  backend: EvalBackend, batch: number, threads: number, device: NativeDevice, maxWindows: number | undefined,
  progress: ReturnType<typeof createProgress>): Promise<EvalSummary> {
  const baseModel = await openModelDir(baseDir);
  try {
    if (baseModel.config.vocabSize !== model.config.vocabSize) {
      throw new BwqError(`has a vocabulary of ${baseModel.config.vocabSize} tokens, the evaluated model ${model.config.vocabSize}: KL divergence needs the same tokens`, { file: baseDir });
    }
    const runner = await createRunner(model, backend, { threads, device });
    const base = await createRunner(baseModel, backend, { threads, device });
    try {
      progress.start(`eval and KL divergence against ${baseDir}, ${seqlen}-token windows`);
      const r = await evaluateKld(runner, base, ids, {
        seqlen, ...(maxWindows === undefined ? {} : { maxWindows }),
        onProgress: (done, total) => progress.update(done, total, 'windows'),
      });
      progress.succeed(`evaluated ${r.windows} windows against the base model in ${r.seconds.toFixed(1)} s`);
      return {
        model: modelDir, dataset, backend, batch, threads, seqlen, windows: r.windows, tokens: r.tokens, ppl: r.ppl,
        meanNll: Math.log(r.ppl), seconds: r.seconds, tokensPerSecond: (r.windows * seqlen) / r.seconds,
        kld: { base: baseDir, basePpl: r.basePpl, ...r.kld, top1Agreement: r.top1Agreement, meanDeltaP: r.meanDeltaP },
      };
    } catch (error) {
      progress.fail();
      throw error;
    } finally {
      await runner.close();
      await base.close();
    }
  } finally {
    await baseModel.checkpoint.close();
  }
}

export function formatEval(s: EvalSummary): string {
  return [
    `model       ${s.model}`,
    `dataset     ${s.dataset}`,
    `backend     ${s.backend}`,
    `perplexity  ${s.ppl.toFixed(4)}   (mean NLL ${s.meanNll.toFixed(6)})`,
    `tokens      ${s.tokens} predicted in ${s.windows} windows of ${s.seqlen}`,
    `time        ${s.seconds.toFixed(2)} s, ${Math.round(s.tokensPerSecond)} tokens/s`,
    ...(s.kld === undefined ? [] : [
      `base        ${s.kld.base} (perplexity ${s.kld.basePpl.toFixed(4)})`,
      `KL div.     mean ${s.kld.mean.toFixed(6)}, median ${s.kld.median.toFixed(6)}, 99% ${s.kld.p99.toFixed(6)}, max ${s.kld.max.toFixed(6)}`,
      `top-1       ${(100 * s.kld.top1Agreement).toFixed(2)} % same as the base model; mean Δp ${(100 * s.kld.meanDeltaP).toFixed(3)} %`,
    ]),
    ...(s.gates ?? []).map((g) => `gate        ${describeGate(g)}   ${g.passed ? 'passed' : 'FAILED'}`),
  ].join('\n');
}

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('perplexity of a model on a text (non-overlapping windows, GPTQ/QuaRot protocol)')
    .argument('[MODEL_DIR]', 'model directory (default: the bundled models/sotu-llama)')
    .option('--dataset <FILE>', 'text to evaluate: .txt, .jsonl, .json or .parquet (each optionally .gz) or a directory of them, or wikitext2 (the bundled WikiText-2 test split, GPTQ protocol); default: bundled data/sotu-test.txt')
    .option('--text-field <NAME>', `${TEXT_FIELD_HELP} (default "${DEFAULT_TEXT_FIELD}")`)
    .option('--seqlen <N>', 'window length in tokens (default: 2048, clamped to max_position_embeddings)')
    .option('--max-windows <N>', 'evaluate at most N windows (default: all)')
    .option('--batch <N>', 'windows per forward call (default: 1)')
    .option('--threads <N>', 'CPU threads for onnxruntime (default: all cores)')
    .option('--backend <NAME>', 'onnx (ONNX Runtime, float or simulated quantization; default) or native (packed 1-bit kernels)')
    .option('--device <NAME>', 'for --backend native: auto (CUDA when a GPU is present; default), cpu or cuda')
    .option('--kld <BASE_DIR>', 'also the KL divergence against BASE_DIR (e.g. the float model) on the same windows')
    .option('--max-ppl <X>', `quality gate: fail (exit ${GATE_FAILED_EXIT_CODE}) when the perplexity exceeds X`)
    .option('--max-ppl-ratio <R>', `quality gate: fail (exit ${GATE_FAILED_EXIT_CODE}) when perplexity / the base model's perplexity (same windows) exceeds R`)
    .option('--base <BASE_DIR>', 'the base (float) model of --max-ppl-ratio (default: the --kld model)')
    .option('--max-kld <K>', `quality gate: fail (exit ${GATE_FAILED_EXIT_CODE}) when the mean KL divergence against the --kld model exceeds K`)
    .option('--tasks <FILE>', 'instead of perplexity: zero-shot multiple-choice accuracy (acc, acc_norm) of the questions in FILE.jsonl, as lm-eval-harness scores them (docs/EVAL.md)')
    .option('--bos', 'with --tasks: put config.json\'s bos_token_id before every context (lm-eval add_bos_token=True)')
    .option('--json', 'print one JSON object')
    .action(async (modelArg: string | undefined, flags: EvalFlags) => {
      const limits = parseGateFlags(flags);
      if (flags.tasks !== undefined && Object.keys(limits).length > 0) throw usageError('--max-ppl, --max-ppl-ratio and --max-kld gate the perplexity evaluation, not --tasks');
      if (flags.tasks !== undefined) {
        const tasks = await runTaskEval(modelArg, flags);
        printResult(flags.json === true, tasks, () => formatTaskEval(tasks));
        return;
      }
      if (flags.bos === true) throw usageError('--bos applies with --tasks only');
      const summary = await runEval(modelArg, flags);
      const gates = checkGates(limits, { ppl: summary.ppl, ...(summary.kld === undefined ? {} : { basePpl: summary.kld.basePpl, meanKld: summary.kld.mean }) });
      if (gates.length > 0) summary.gates = gates;
      printResult(flags.json === true, summary, () => formatEval(summary));
      enforceGates(gates, summary.model);
    });
}
