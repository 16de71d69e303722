/**
 * Where tokenizers.js (@huggingface/tokenizers 0.2, the JS port bwq runs) departs from the Rust `tokenizers`
 * library that transformers runs, and what bwq does about it:
 *
 * - Metaspace pre-tokenizer: tokenizers.js never splits (Rust splits before each "▁" when `split` is true, the
 *   default of files that predate `prepend_scheme`), and reads a missing `prepend_scheme` as "always" even when
 *   the old `add_prefix_space` is false (Rust: "never"). bwq normalizes the JSON and splits itself.
 * - A character outside the vocabulary (and without <0xNN> byte tokens) when the BPE model has no unk token:
 *   Rust drops it before merging, so its neighbours may merge; tokenizers.js keeps it in the word (where it blocks
 *   merges) and drops it afterwards. bwq drops it before BPE.
 * - BPE on a very long pre-token (a sentencepiece-style tokenizer has no pre-tokenizer split, so a whole
 *   document is one word): same result, but tokenizers.js takes ~55 s on WikiText-2 (~7 s once cut). bwq cuts
 *   such a word between two characters that no vocabulary token holds side by side: no merge can cross that
 *   point (every merge result is a vocabulary token), so the pieces encode to exactly the ids of the whole.
 */
import { TextEncoder } from 'node:util';
import type { Tokenizer } from '@huggingface/tokenizers';
import { BwqError } from '../errors.js';
import type { JsonObject } from './tokenizer-rebuild.js';

const SPIECE = '\u2581';

/** Rust's reading of a Metaspace config: prepend_scheme and split made explicit. */
function rustMetaspace(config: JsonObject): JsonObject {
  const prependScheme = config['prepend_scheme'] ?? (config['add_prefix_space'] === false ? 'never' : 'always');
  return { ...config, prepend_scheme: prependScheme, split: config['split'] ?? true };
}

function normalizePreTokenizer(config: unknown, nested: boolean, file: string): unknown {
  if (typeof config !== 'object' || config === null) return config;
  const obj = config as JsonObject;
  if (obj['type'] === 'Metaspace') {
    const rust = rustMetaspace(obj);
    if (rust['split'] === true && nested) {
      throw new BwqError('a Metaspace pre-tokenizer with split inside a Sequence is not supported', { file });
    }
    return rust;
  }
  if (obj['type'] === 'Sequence' && Array.isArray(obj['pretokenizers'])) {
    return { ...obj, pretokenizers: (obj['pretokenizers'] as unknown[]).map((p) => normalizePreTokenizer(p, true, file)) };
  }
  return obj;
}

/** tokenizer.json with the Metaspace settings tokenizers.js misreads made explicit. */
export function normalizeForTokenizersJs(tokenizerJson: JsonObject, file: string): JsonObject {
  return { ...tokenizerJson, pre_tokenizer: normalizePreTokenizer(tokenizerJson['pre_tokenizer'] ?? null, false, file) };
}

/** Metaspace with split: the Rust pieces, each "▁" starting a new one (SplitDelimiterBehavior::MergedWithNext). */
function splitBeforeSpiece(replaced: string): string[] {
  const pieces: string[] = [];
  let start = 0;
  for (let i = 1; i < replaced.length; i++) {
    if (replaced[i] === SPIECE) {
      pieces.push(replaced.slice(start, i));
      start = i;
    }
  }
  if (replaced.length > 0) pieces.push(replaced.slice(start));
  return pieces;
}

/** Words longer than this many UTF-16 units are cut at merge-proof points before BPE. */
const LONG_WORD = 512;

/** Pairs of adjacent code points found inside some vocabulary token. */
function adjacentPairs(vocab: Iterable<string>): Set<string> {
  const pairs = new Set<string>();
  for (const token of vocab) {
    const points = Array.from(token);
    for (let i = 1; i < points.length; i++) pairs.add(points[i - 1]! + points[i]!);
  }
  return pairs;
}

function cutAtMergeProofPoints(word: string, pairs: ReadonlySet<string>): string[] {
  const pieces: string[] = [];
  const points = Array.from(word);
  let start = 0;
  let offset = 0;
  for (let i = 0; i < points.length; i++) {
    if (i > 0 && !pairs.has(points[i - 1]! + points[i]!)) {
      pieces.push(word.slice(start, offset));
      start = offset;
    }
    offset += points[i]!.length;
  }
  pieces.push(word.slice(start));
  return pieces;
}

/** Rust BPE without unk token: characters that are neither vocabulary tokens nor byte-fallback tokens vanish. */
function dropUnknownCharacters(word: string, vocab: ReadonlyMap<string, number>, byteFallback: boolean, encoder: TextEncoder): string {
  let kept = '';
  let dropped = false;
  for (const point of word) {
    const known = vocab.has(point) || (byteFallback && Array.from(encoder.encode(point))
      .every((b: number) => vocab.has(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)));
    if (known) kept += point;
    else dropped = true;
  }
  return dropped ? kept : word;
}

/** Applies the fixes above to a tokenizers.js Tokenizer built from `tokenizerJson` (already normalized). */
export function patchTokenizersJs(tokenizer: Tokenizer, tokenizerJson: JsonObject, file: string): void {
  const pre = tokenizerJson['pre_tokenizer'] as JsonObject | null;
  const metaspace = tokenizer.pre_tokenizer;
  if (pre !== null && pre['type'] === 'Metaspace' && pre['split'] === true && metaspace !== null) {
    if (pre['replacement'] !== SPIECE) throw new BwqError('a Metaspace pre-tokenizer with split and a replacement other than "▁" is not supported', { file });
    const replaceAndPrepend = metaspace.pre_tokenize_text.bind(metaspace);
    metaspace.pre_tokenize_text = (text: string, options?: { section_index?: number }): string[] =>
      replaceAndPrepend(text, options).flatMap(splitBeforeSpiece);
  }
  const model = tokenizer.model;
  const modelJson = tokenizerJson['model'] as JsonObject;
  const plainBpe = modelJson['type'] === 'BPE' && modelJson['ignore_merges'] !== true
    && !modelJson['end_of_word_suffix'] && !modelJson['continuing_subword_prefix'] && !modelJson['continuing_subword_suffix'];
  if (model === null || modelJson['type'] !== 'BPE') return;
  const encode = model.encode.bind(model);
  const vocab = model.tokens_to_ids;
  const withoutUnknown = model.unk_token === undefined || model.unk_token === null;
  const byteFallback = modelJson['byte_fallback'] === true;
  const encoder = new TextEncoder();
  const ignoreMerges = modelJson['ignore_merges'] === true;
  let pairs: Set<string> | undefined;
  model.encode = (words: string[]): string[] => {
    const filtered = !withoutUnknown ? words : words
      .map((w) => (ignoreMerges && vocab.has(w) ? w : dropUnknownCharacters(w, vocab, byteFallback, encoder)))
      .filter((w) => w.length > 0);
    if (!plainBpe || !filtered.some((w) => w.length > LONG_WORD)) return encode(filtered);
    pairs ??= adjacentPairs(vocab.keys());
    const known = pairs;
    return encode(filtered.flatMap((w) => (w.length > LONG_WORD ? cutAtMergeProofPoints(w, known) : [w])));
  };
}
