/** Evaluation text → token ids with the model's tokenizer (no special tokens). */
import { readTextCorpus, type TextCorpusOptions } from '../data/text-corpus.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { readWikitext2, WIKITEXT2_FILE, WIKITEXT2_NAME } from './wikitext.js';

/**
 * `file` is a corpus file or directory (.txt, .jsonl, .json, .parquet, optionally .gz: src/data/text-corpus.ts),
 * or the bundled WikiText-2 test split by its name 'wikitext2'.
 */
export async function loadEvalTokens(file: string, tokenizer: TextTokenizer, options: TextCorpusOptions = {}): Promise<Int32Array> {
  const text = file === WIKITEXT2_NAME || file === WIKITEXT2_FILE ? await readWikitext2() : await readTextCorpus(file, options);
  return tokenizer.encode(text);
}
