/**
 * Text ↔ token ids as transformers 5.17's `AutoTokenizer.from_pretrained(MODEL_DIR)` tokenizes, run by Hugging
 * Face tokenizers.js (pure JS, offline). The model directory's tokenizer_config.json and config.json pick the
 * transformers tokenizer class (src/model/tokenizer-class.ts); that class decides whether tokenizer.json is
 * used as is or rebuilt (src/model/tokenizer-rebuild.ts); src/model/tokenizers-js-fidelity.ts closes the gaps
 * between tokenizers.js and the Rust library. docs/TOKENIZER.md states the rules.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { BwqError } from '../errors.js';
import { transformersTokenizerClass, type TokenizerClassChoice } from './tokenizer-class.js';
import { transformersTokenizerJson, type JsonObject, type TokenizerSources } from './tokenizer-rebuild.js';
import { normalizeForTokenizersJs, patchTokenizersJs } from './tokenizers-js-fidelity.js';

export interface TextTokenizer {
  /** no special tokens added */
  encode(text: string): Int32Array;
  /** with the special tokens transformers adds (`add_special_tokens=True`, e.g. a leading BOS) */
  encodeWithSpecialTokens(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
  readonly vocabSize: number;
  /** how the pipeline was chosen, e.g. "transformers 5.17 LlamaTokenizer (tokenizer_class LlamaTokenizer)" */
  readonly pipeline: string;
}

/**
 * `transformers` (default): the tokenizer transformers 5.17's AutoTokenizer builds from the directory;
 * `tokenizer.json`: tokenizer.json exactly as written, whatever tokenizer_config.json says.
 */
export type TokenizerRules = 'transformers' | 'tokenizer.json';

export interface LoadTokenizerOptions {
  readonly rules?: TokenizerRules;
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

  constructor(private readonly tokenizer: Tokenizer, readonly pipeline: string) {
    this.vocabSize = tokenizer.get_vocab(true).size;
  }

  encode(text: string): Int32Array {
    if (text.length === 0) return new Int32Array(0);
    return Int32Array.from(this.tokenizer.encode(text, { add_special_tokens: false }).ids);
  }

  encodeWithSpecialTokens(text: string): Int32Array {
    return Int32Array.from(this.tokenizer.encode(text, { add_special_tokens: true }).ids);
  }

  decode(ids: ArrayLike<number>): string {
    if (ids.length === 0) return ''; // tokenizers.js rejects an empty id list
    return this.tokenizer.decode(Array.from(ids), { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }
}

function optionalString(json: JsonObject | undefined, key: string): string | undefined {
  const value = json?.[key];
  return typeof value === 'string' ? value : undefined;
}

function describe(choice: TokenizerClassChoice & { kind: 'reproduced' }): string {
  return choice.cls === 'TokenizersBackend'
    ? `tokenizer.json as is, as transformers 5.17 TokenizersBackend reads it (${choice.why})`
    : `transformers 5.17 ${choice.cls} rebuilt from tokenizer.json (${choice.why})`;
}

/**
 * Loads DIR/tokenizer.json (required) with DIR/tokenizer_config.json, config.json, special_tokens_map.json and
 * added_tokens.json when present.
 */
export async function loadTokenizer(dir: string, options: LoadTokenizerOptions = {}): Promise<TextTokenizer> {
  const tokenizerFile = join(dir, 'tokenizer.json');
  const tokenizerJson = (await readJson(tokenizerFile, true))!;
  const configFile = join(dir, 'tokenizer_config.json');
  const tokenizerConfig = (await readJson(configFile, false)) ?? {};
  if (typeof tokenizerJson['model'] !== 'object' || tokenizerJson['model'] === null) {
    throw new BwqError('not a tokenizer file (no "model" object)', { file: tokenizerFile });
  }
  let effective: JsonObject = tokenizerJson;
  let pipeline = 'tokenizer.json as is (rules: tokenizer.json)';
  if ((options.rules ?? 'transformers') === 'transformers') {
    const modelConfig = await readJson(join(dir, 'config.json'), false);
    const choice = transformersTokenizerClass({
      modelType: optionalString(modelConfig, 'model_type'),
      configTokenizerClass: optionalString(modelConfig, 'tokenizer_class'),
      tokenizerClass: optionalString(tokenizerConfig, 'tokenizer_class'),
    });
    if (choice.kind === 'unreproduced') {
      throw new BwqError(`transformers 5.17 builds this tokenizer with ${choice.name} (${choice.why}), whose pipeline bwq does not reproduce`, { file: configFile });
    }
    const legacyFiles = !('added_tokens_decoder' in tokenizerConfig);
    const sources: TokenizerSources = {
      tokenizerJson,
      tokenizerConfig,
      specialTokensMap: legacyFiles ? await readJson(join(dir, 'special_tokens_map.json'), false) : undefined,
      addedTokensFile: legacyFiles ? await readJson(join(dir, 'added_tokens.json'), false) : undefined,
      tokenizerFile,
    };
    effective = transformersTokenizerJson(sources, choice.cls);
    pipeline = describe(choice);
  }
  try {
    const forJs = normalizeForTokenizersJs(effective, tokenizerFile);
    // remove_space / do_lowercase_and_remove_accent are tokenizers.js imitations of slow tokenizers; transformers 5 has none.
    const { remove_space: _removeSpace, do_lowercase_and_remove_accent: _lowercase, ...jsConfig } = tokenizerConfig;
    const tokenizer = new Tokenizer(forJs, jsConfig);
    patchTokenizersJs(tokenizer, forJs, tokenizerFile);
    return new HfTextTokenizer(tokenizer, pipeline);
  } catch (error) {
    if (error instanceof BwqError) throw error;
    throw new BwqError(`unsupported tokenizer: ${(error as Error).message}`, { file: tokenizerFile, cause: error });
  }
}
