/**
 * Calibration windows for `bwq quantize`.
 *
 * text (a file or directory of txt / jsonl / json / parquet, optionally gzip: src/data/text-corpus.ts)
 * → token ids with the model tokenizer (no special tokens) → `nsamples` windows of `seqlen`
 * consecutive tokens whose start offsets are drawn uniformly from [0, tokens − seqlen] by the seeded generator of src/linalg/random.ts
 * (xoshiro128**, seeded by splitmix32 of `seed`), exactly as GPTQ/llm-compressor draw C4/WikiText
 * windows. Same text + tokenizer + seed → the same windows. Windows may overlap when the text is
 * short; a text shorter than `seqlen` tokens is an error.
 */
import { BwqError } from '../errors.js';
import { Rng } from '../linalg/random.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { readTextCorpus } from './text-corpus.js';

export interface CalibrationWindows {
  /** [nsamples * seqlen] token ids, window-major */
  ids: Int32Array;
  nsamples: number;
  seqlen: number;
  /** start offset of each window in the tokenized text */
  starts: Int32Array;
  /** total tokens in the calibration text */
  textTokens: number;
}

export function sampleWindows(tokens: Int32Array, nsamples: number, seqlen: number, seed: number, file = 'calibration text'): CalibrationWindows {
  if (!Number.isInteger(nsamples) || nsamples < 1) throw new BwqError(`nsamples must be a positive integer (got ${nsamples})`);
  if (!Number.isInteger(seqlen) || seqlen < 2) throw new BwqError(`seqlen must be an integer ≥ 2 (got ${seqlen})`);
  if (tokens.length < seqlen) {
    throw new BwqError(`calibration text has only ${tokens.length} tokens, fewer than seqlen ${seqlen}`, { file });
  }
  const rng = new Rng(seed);
  const span = tokens.length - seqlen + 1;
  const ids = new Int32Array(nsamples * seqlen);
  const starts = new Int32Array(nsamples);
  for (let i = 0; i < nsamples; i++) {
    const start = rng.int(span);
    starts[i] = start;
    ids.set(tokens.subarray(start, start + seqlen), i * seqlen);
  }
  return { ids, nsamples, seqlen, starts, textTokens: tokens.length };
}

export async function loadCalibrationWindows(
  file: string,
  tokenizer: TextTokenizer,
  options: { nsamples: number; seqlen: number; seed: number; vocabSize?: number; textField?: string },
): Promise<CalibrationWindows> {
  const text = await readTextCorpus(file, options.textField === undefined ? {} : { textField: options.textField });
  const tokens = tokenizer.encode(text);
  if (options.vocabSize !== undefined) {
    for (let i = 0; i < tokens.length; i++) {
      if (tokens[i]! < 0 || tokens[i]! >= options.vocabSize) {
        throw new BwqError(`token id ${tokens[i]} is outside the model's vocabulary (${options.vocabSize}); tokenizer and model do not match`, { file });
      }
    }
  }
  return sampleWindows(tokens, options.nsamples, options.seqlen, options.seed, file);
}
