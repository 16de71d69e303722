/**
 * The end-of-sequence token ids of a model directory, first found of:
 *  1. generation_config.json's eos_token_id (a number or a list of numbers),
 *  2. config.json's eos_token_id,
 *  3. tokenizer_config.json's eos_token (a string or {content}) when it encodes to exactly one id.
 * None found: an empty list (generation then stops only at its length limits).
 */
import { join } from 'node:path';
import { BwqError } from '../errors.js';
import type { ModelConfig } from './config.js';
import { readJson, type TextTokenizer } from './tokenizer.js';

function readOptionalJson(file: string): Promise<Record<string, unknown> | undefined> {
  return readJson(file, false);
}

/** eos_token_id as a list of ids; undefined when absent or null. */
export function parseEosTokenId(value: unknown, file: string): number[] | undefined {
  if (value === undefined || value === null) return undefined;
  const list = Array.isArray(value) ? value : [value];
  for (const id of list) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      throw new BwqError(`eos_token_id must be a non-negative integer or a list of them (got ${JSON.stringify(value)})`, { file });
    }
  }
  return list as number[];
}

export async function loadEosTokenIds(dir: string, config: ModelConfig, tokenizer: Pick<TextTokenizer, 'encode'>): Promise<number[]> {
  const generationFile = join(dir, 'generation_config.json');
  const generation = await readOptionalJson(generationFile);
  const fromGeneration = parseEosTokenId(generation?.['eos_token_id'], generationFile);
  if (fromGeneration !== undefined) return fromGeneration;
  const fromConfig = parseEosTokenId(config.raw['eos_token_id'], join(dir, 'config.json'));
  if (fromConfig !== undefined) return fromConfig;
  const tokenizerConfig = await readOptionalJson(join(dir, 'tokenizer_config.json'));
  const eos = tokenizerConfig?.['eos_token'];
  const content = typeof eos === 'string' ? eos : typeof eos === 'object' && eos !== null ? (eos as Record<string, unknown>)['content'] : undefined;
  if (typeof content === 'string' && content !== '') {
    const ids = tokenizer.encode(content);
    if (ids.length === 1) return [ids[0]!];
  }
  return [];
}
