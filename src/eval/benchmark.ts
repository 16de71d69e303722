/** Eval throughput on the bundled model (used by `npm run bench`). */
import { openModelDir } from '../model/model-dir.js';
import { loadTokenizer } from '../model/tokenizer.js';
import { createModelRunner } from '../onnx/model-runner.js';
import { loadEvalTokens } from './dataset.js';
import { evaluatePerplexity } from './perplexity.js';
import { DEFAULT_EVAL_DATASET, DEFAULT_MODEL_DIR } from '../package-paths.js';

export interface EvalBenchmark {
  tokensPerSecond: number;
  seconds: number;
  tokens: number;
  windows: number;
  seqlen: number;
  batch: number;
  threads: number | undefined;
  ppl: number;
  modelDir: string;
}

export async function benchmarkEval(options: { modelDir?: string; seqlen?: number; windows?: number; batch?: number; threads?: number; dataset?: string } = {}): Promise<EvalBenchmark> {
  const modelDir = options.modelDir ?? DEFAULT_MODEL_DIR;
  const model = await openModelDir(modelDir);
  try {
    const tokenizer = await loadTokenizer(modelDir);
    const ids = await loadEvalTokens(options.dataset ?? DEFAULT_EVAL_DATASET, tokenizer);
    const seqlen = Math.min(options.seqlen ?? 1024, model.config.maxPositionEmbeddings);
    const batch = options.batch ?? 1;
    const runner = await createModelRunner(model, options.threads === undefined ? {} : { threads: options.threads });
    try {
      // Warm-up (session creation, first-run allocations) outside the timing.
      await runner.nll(ids.subarray(0, seqlen), 1, seqlen);
      const r = await evaluatePerplexity(runner, ids, { seqlen, maxWindows: options.windows ?? 16, batch });
      return { tokensPerSecond: r.tokensPerSecond, seconds: r.seconds, tokens: r.tokens, windows: r.windows, seqlen, batch, threads: options.threads, ppl: r.ppl, modelDir };
    } finally {
      await runner.close();
    }
  } finally {
    await model.checkpoint.close();
  }
}
