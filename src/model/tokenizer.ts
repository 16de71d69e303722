/**
 * Text ↔ token ids through Hugging Face tokenizers.js (pure JS, offline) reading the model
 * directory's tokenizer.json (+ tokenizer_config.json when present).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { BwqError } from '../errors.js';

export interface TextTokenizer {
  /** no special tokens added */
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
  readonly vocabSize: number;
}

/** A JSON object file; undefined when it does not exist and is not required. */
export async function readJson(file: string, required: boolean): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      if (!required) return undefined;
      throw new BwqError('tokenizer.json not found (bwq needs the Hugging Face fast-tokenizer file)', { file, cause: error });
    }
    throw new BwqError(`cannot read: ${(error as Error).message}`, { file, cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new BwqError(`not valid JSON (${(error as Error).message.split('\n')[0]})`, { file });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new BwqError('not a JSON object', { file });
  return json as Record<string, unknown>;
}

class HfTextTokenizer implements TextTokenizer {
  readonly vocabSize: number;

  constructor(private readonly tokenizer: Tokenizer) {
    this.vocabSize = tokenizer.get_vocab(true).size;
  }

  encode(text: string): Int32Array {
    if (text.length === 0) return new Int32Array(0);
    return Int32Array.from(this.tokenizer.encode(text, { add_special_tokens: false }).ids);
  }

  decode(ids: ArrayLike<number>): string {
    if (ids.length === 0) return ''; // tokenizers.js rejects an empty id list
    return this.tokenizer.decode(Array.from(ids), { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }
}

/** Loads DIR/tokenizer.json (required) and DIR/tokenizer_config.json (optional). */
export async function loadTokenizer(dir: string): Promise<TextTokenizer> {
  const tokenizerFile = join(dir, 'tokenizer.json');
  const tokenizerJson = (await readJson(tokenizerFile, true))!;
  const tokenizerConfig = (await readJson(join(dir, 'tokenizer_config.json'), false)) ?? {};
  if (typeof tokenizerJson['model'] !== 'object' || tokenizerJson['model'] === null) {
    throw new BwqError('not a tokenizer file (no "model" object)', { file: tokenizerFile });
  }
  try {
    return new HfTextTokenizer(new Tokenizer(tokenizerJson, tokenizerConfig));
  } catch (error) {
    throw new BwqError(`unsupported tokenizer: ${(error as Error).message}`, { file: tokenizerFile, cause: error });
  }
}
