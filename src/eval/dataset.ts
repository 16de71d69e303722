/** Evaluation text → token ids with the model's tokenizer (no special tokens). */
import { readTextCorpus } from '../data/text-corpus.js';
import type { TextTokenizer } from '../model/tokenizer.js';

export async function loadEvalTokens(file: string, tokenizer: TextTokenizer): Promise<Int32Array> {
  const text = await readTextCorpus(file);
  return tokenizer.encode(text);
}
