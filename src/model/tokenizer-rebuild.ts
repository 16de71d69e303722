/**
 * The tokenizer pipeline transformers 5.17 builds from a model directory, written as a tokenizer.json object.
 *
 * `TokenizersBackend` keeps tokenizer.json. LlamaTokenizer, CodeLlamaTokenizer, GPT2Tokenizer and Qwen2Tokenizer
 * (their `__init__` in transformers/models/<family>/tokenization_<family>.py) keep only the vocabulary, the merges
 * and the post-processor of tokenizer.json and set their own normalizer, pre-tokenizer, BPE options and decoder;
 * e.g. LlamaTokenizer drops the Prepend("▁") + Replace(" ", "▁") normalizer that Llama-2 / Mistral checkpoints
 * ship and uses Metaspace(prepend_scheme "first" when legacy is false or absent, "always" when legacy is true,
 * "never" when add_prefix_space is false; split false). Added tokens follow tokenizer_config.json's
 * `added_tokens_decoder` (or, without it, special_tokens_map.json, added_tokens.json and tokenizer.json's
 * `added_tokens`) and the special tokens; the post-processor is rewritten to `[bos] $A [eos]` when
 * tokenizer_config.json sets add_bos_token / add_eos_token (tokenization_utils_tokenizers.py). docs/TOKENIZER.md.
 */
import { BwqError } from '../errors.js';
import type { TokenizerClass } from './tokenizer-class.js';

export type JsonObject = Record<string, unknown>;

/** The files of a model directory that decide its tokenizer. */
export interface TokenizerSources {
  readonly tokenizerJson: JsonObject;
  /** tokenizer_config.json ({} when absent) */
  readonly tokenizerConfig: JsonObject;
  /** special_tokens_map.json, read only when tokenizer_config.json has no added_tokens_decoder */
  readonly specialTokensMap: JsonObject | undefined;
  /** added_tokens.json (content → id), same condition */
  readonly addedTokensFile: JsonObject | undefined;
  /** path of tokenizer.json, for errors */
  readonly tokenizerFile: string;
}

interface AddedTokenSpec {
  readonly content: string;
  readonly single_word: boolean;
  readonly lstrip: boolean;
  readonly rstrip: boolean;
  readonly normalized: boolean;
  readonly special: boolean;
}

const SPIECE = '\u2581';
const SPECIAL_TOKEN_ATTRIBUTES = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;
type SpecialTokenAttribute = (typeof SPECIAL_TOKEN_ATTRIBUTES)[number];
type SpecialTokenValue = string | AddedTokenSpec | null;

/** transformers 5.17 Qwen2Tokenizer's PRETOKENIZE_REGEX */
export const QWEN2_PRETOKENIZE_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** The `__init__` defaults of each class's named special tokens (PreTrainedTokenizerBase: none). */
const CLASS_SPECIAL_DEFAULTS: Readonly<Record<TokenizerClass, Partial<Record<SpecialTokenAttribute, string>>>> = {
  TokenizersBackend: {},
  LlamaTokenizer: { unk_token: '<unk>', bos_token: '<s>', eos_token: '</s>' },
  CodeLlamaTokenizer: { unk_token: '<unk>', bos_token: '<s>', eos_token: '</s>' },
  GPT2Tokenizer: { unk_token: '<|endoftext|>', bos_token: '<|endoftext|>', eos_token: '<|endoftext|>' },
  Qwen2Tokenizer: { unk_token: '<|endoftext|>', eos_token: '<|endoftext|>', pad_token: '<|endoftext|>' },
};

const CODE_LLAMA_FILL_TOKENS: readonly [string, string][] = [
  ['prefix_token', `${SPIECE}<PRE>`], ['middle_token', `${SPIECE}<MID>`], ['suffix_token', `${SPIECE}<SUF>`],
  ['eot_token', `${SPIECE}<EOT>`], ['fill_token', '<FILL_ME>'],
];

/** Python truthiness of a JSON value, as `if value:` reads a tokenizer_config.json entry. */
export function pythonTruthy(value: unknown): boolean {
  if (value === undefined || value === null || value === false || value === 0 || value === '') return false;
  if (Array.isArray(value)) return value.length > 0;
  if (typeof value === 'object') return Object.keys(value).length > 0;
  return true;
}

function flag(raw: JsonObject, key: string, fallback: boolean): boolean {
  const value = raw[key];
  return typeof value === 'boolean' ? value : fallback;
}

/** AddedToken(**dict): normalized defaults to `not special`. */
function addedTokenFrom(raw: unknown, where: string, file: string, forceSpecial = false): AddedTokenSpec {
  if (typeof raw === 'string') return plainSpecial(raw);
  if (typeof raw !== 'object' || raw === null || typeof (raw as JsonObject)['content'] !== 'string') {
    throw new BwqError(`${where} is not a token (a string or an object with "content")`, { file });
  }
  const obj = raw as JsonObject;
  const special = forceSpecial || flag(obj, 'special', false);
  return {
    content: obj['content'] as string,
    single_word: flag(obj, 'single_word', false),
    lstrip: flag(obj, 'lstrip', false),
    rstrip: flag(obj, 'rstrip', false),
    normalized: flag(obj, 'normalized', !special),
    special,
  };
}

/** AddedToken(content, special=True): not normalized, no stripping. */
function plainSpecial(content: string): AddedTokenSpec {
  return { content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

function sameToken(a: AddedTokenSpec, b: AddedTokenSpec): boolean {
  return a.content === b.content && a.single_word === b.single_word && a.lstrip === b.lstrip && a.rstrip === b.rstrip
    && a.normalized === b.normalized && a.special === b.special;
}

/** The tokenizers library's AddedVocabulary: ids of added tokens, by content. */
class AddedVocabulary {
  private readonly byContent = new Map<string, { id: number; token: AddedTokenSpec }>();

  constructor(private readonly vocab: ReadonlyMap<string, number>, private readonly vocabSize: number) {}

  has(content: string): boolean {
    return this.byContent.has(content);
  }

  /** An existing entry keeps its id and takes the new flags (AddedVocabulary::add_tokens). */
  add(token: AddedTokenSpec, id?: number): void {
    if (token.content.length === 0) return;
    const existing = this.byContent.get(token.content);
    if (existing !== undefined) {
      existing.token = token;
      return;
    }
    this.byContent.set(token.content, { id: id ?? this.vocab.get(token.content) ?? this.nextId(), token });
  }

  private nextId(): number {
    let max = -1;
    for (const { id } of this.byContent.values()) max = Math.max(max, id);
    return max >= this.vocabSize ? max + 1 : this.vocabSize;
  }

  idOf(content: string): number | undefined {
    return this.byContent.get(content)?.id ?? this.vocab.get(content);
  }

  serialize(): JsonObject[] {
    return [...this.byContent.values()].sort((a, b) => a.id - b.id).map(({ id, token }) => ({ id, ...token }));
  }
}

function modelObject(sources: TokenizerSources): JsonObject {
  return sources.tokenizerJson['model'] as JsonObject;
}

function vocabMap(sources: TokenizerSources): Map<string, number> {
  const vocab = modelObject(sources)['vocab'];
  const map = new Map<string, number>();
  if (Array.isArray(vocab)) {
    vocab.forEach((entry, i) => map.set(Array.isArray(entry) ? String(entry[0]) : String(entry), i));
  } else if (typeof vocab === 'object' && vocab !== null) {
    for (const [token, id] of Object.entries(vocab as JsonObject)) {
      if (typeof id !== 'number') throw new BwqError(`model.vocab["${token}"] is not a number`, { file: sources.tokenizerFile });
      map.set(token, id);
    }
  } else {
    throw new BwqError('model has no "vocab"', { file: sources.tokenizerFile });
  }
  return map;
}

function vocabSize(vocab: ReadonlyMap<string, number>): number {
  let max = -1;
  for (const id of vocab.values()) max = Math.max(max, id);
  return Math.max(vocab.size, max + 1);
}

/** tokenizer_config.json + (without added_tokens_decoder) special_tokens_map.json, as from_pretrained merges them. */
function initKwargs(sources: TokenizerSources): JsonObject {
  const kwargs: JsonObject = { ...sources.tokenizerConfig };
  if (!('added_tokens_decoder' in kwargs) && sources.specialTokensMap !== undefined) {
    for (const [key, value] of Object.entries(sources.specialTokensMap)) kwargs[key] = value;
  }
  return kwargs;
}

/** The added tokens from_pretrained hands to the class (`added_tokens_decoder`), by id. */
function decoderTokens(sources: TokenizerSources, kwargs: JsonObject): [number, AddedTokenSpec][] {
  const configFile = sources.tokenizerFile.replace(/tokenizer\.json$/, 'tokenizer_config.json');
  const entries: [number, AddedTokenSpec][] = [];
  const decoder = sources.tokenizerConfig['added_tokens_decoder'];
  if (decoder !== undefined) {
    if (typeof decoder !== 'object' || decoder === null || Array.isArray(decoder)) {
      throw new BwqError('"added_tokens_decoder" is not an object', { file: configFile });
    }
    for (const [id, raw] of Object.entries(decoder as JsonObject)) {
      entries.push([Number(id), addedTokenFrom(raw, `added_tokens_decoder["${id}"]`, configFile)]);
    }
  } else {
    if (sources.addedTokensFile !== undefined) {
      const specials = new Set(namedSpecialContents(kwargs));
      for (const [content, id] of Object.entries(sources.addedTokensFile)) {
        const special = specials.has(content);
        entries.push([Number(id), { content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special }]);
      }
    }
    for (const raw of tokenizerJsonAddedTokens(sources)) {
      entries.push([(raw as JsonObject)['id'] as number, addedTokenFrom(raw, 'added_tokens entry', sources.tokenizerFile)]);
    }
  }
  return entries.sort((a, b) => a[0] - b[0]);
}

function tokenizerJsonAddedTokens(sources: TokenizerSources): JsonObject[] {
  const added = sources.tokenizerJson['added_tokens'] ?? [];
  if (!Array.isArray(added) || added.some((t) => typeof t !== 'object' || t === null || typeof (t as JsonObject)['id'] !== 'number')) {
    throw new BwqError('"added_tokens" is not a list of tokens with ids', { file: sources.tokenizerFile });
  }
  return added as JsonObject[];
}

function specialValue(raw: unknown): SpecialTokenValue {
  if (raw === null || raw === undefined) return null;
  if (typeof raw === 'string') return raw;
  if (typeof raw === 'object' && typeof (raw as JsonObject)['content'] === 'string') return addedTokenFrom(raw, 'special token', '', true);
  return null;
}

function contentOf(value: string | AddedTokenSpec): string {
  return typeof value === 'string' ? value : value.content;
}

/** The named special tokens (bos, eos, unk, ...) after class defaults and the configuration. */
function namedSpecials(cls: TokenizerClass, kwargs: JsonObject): Map<SpecialTokenAttribute, string | AddedTokenSpec> {
  const named = new Map<SpecialTokenAttribute, string | AddedTokenSpec>();
  for (const attribute of SPECIAL_TOKEN_ATTRIBUTES) {
    const value = attribute in kwargs ? specialValue(kwargs[attribute]) : (CLASS_SPECIAL_DEFAULTS[cls][attribute] ?? null);
    if (value !== null) named.set(attribute, value);
  }
  return named;
}

function namedSpecialContents(kwargs: JsonObject): string[] {
  return SPECIAL_TOKEN_ATTRIBUTES.map((a) => specialValue(kwargs[a])).filter((v): v is string | AddedTokenSpec => v !== null).map(contentOf);
}

/** additional_special_tokens / extra_special_tokens (a list), plus CodeLlama's fill tokens. */
function extraSpecials(cls: TokenizerClass, kwargs: JsonObject): (string | AddedTokenSpec)[] {
  const extras: (string | AddedTokenSpec)[] = [];
  for (const key of ['additional_special_tokens', 'extra_special_tokens']) {
    const list = kwargs[key];
    if (Array.isArray(list)) for (const item of list) { const v = specialValue(item); if (v !== null) extras.push(v); }
  }
  if (cls === 'CodeLlamaTokenizer') {
    for (const [key, fallback] of CODE_LLAMA_FILL_TOKENS) {
      const value = key in kwargs ? specialValue(kwargs[key]) : fallback;
      if (value !== null) extras.push(value);
    }
  }
  return extras;
}

function mergesOf(sources: TokenizerSources): unknown[] {
  const merges = modelObject(sources)['merges'];
  if (!Array.isArray(merges)) throw new BwqError('model has no "merges" list (a BPE model is required)', { file: sources.tokenizerFile });
  return merges;
}

function bpeModel(sources: TokenizerSources, options: JsonObject): JsonObject {
  const vocab = Object.fromEntries(vocabMap(sources));
  return {
    type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
    fuse_unk: false, byte_fallback: false, ignore_merges: false, ...options, vocab, merges: mergesOf(sources),
  };
}

function metaspaceDecoder(strip: boolean): JsonObject {
  const steps: JsonObject[] = [
    { type: 'Replace', pattern: { String: SPIECE }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' },
  ];
  if (strip) steps.push({ type: 'Strip', content: ' ', start: 1, stop: 0 });
  return { type: 'Sequence', decoders: steps };
}

function metaspace(prependScheme: 'always' | 'first' | 'never'): JsonObject {
  return { type: 'Metaspace', replacement: SPIECE, prepend_scheme: prependScheme, split: false };
}

const BYTE_LEVEL_DECODER: JsonObject = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true };

/** Normalizer, pre-tokenizer, model and decoder as the class's `__init__` sets them. */
function rebuiltPipeline(cls: Exclude<TokenizerClass, 'TokenizersBackend'>, sources: TokenizerSources, kwargs: JsonObject): JsonObject {
  const modelType = modelObject(sources)['type'];
  if (modelType !== undefined && modelType !== 'BPE') {
    throw new BwqError(`tokenizer.json has a ${String(modelType)} model; transformers 5.17's ${cls} rebuilds it as BPE, which bwq does not reproduce`, { file: sources.tokenizerFile });
  }
  switch (cls) {
    case 'LlamaTokenizer': {
      const addPrefixSpace = kwargs['add_prefix_space'] === undefined || kwargs['add_prefix_space'] === null ? true : pythonTruthy(kwargs['add_prefix_space']);
      // _get_prepend_scheme: "always" unless `not getattr(tokenizer, "legacy", True)`; LlamaTokenizer's legacy defaults to False
      const legacy = 'legacy' in kwargs ? pythonTruthy(kwargs['legacy']) : false;
      return {
        normalizer: null,
        pre_tokenizer: metaspace(addPrefixSpace ? (legacy ? 'always' : 'first') : 'never'),
        model: bpeModel(sources, { fuse_unk: true, byte_fallback: true }),
        decoder: metaspaceDecoder(addPrefixSpace),
      };
    }
    case 'CodeLlamaTokenizer': {
      const addPrefixSpace = kwargs['add_prefix_space'] === undefined || kwargs['add_prefix_space'] === null ? true : pythonTruthy(kwargs['add_prefix_space']);
      const unk = 'unk_token' in kwargs ? specialValue(kwargs['unk_token']) : '<unk>';
      return {
        normalizer: null,
        pre_tokenizer: metaspace(addPrefixSpace ? 'first' : 'never'),
        model: bpeModel(sources, { fuse_unk: true, byte_fallback: true, unk_token: unk === null ? 'None' : contentOf(unk) }),
        decoder: metaspaceDecoder(true),
      };
    }
    case 'GPT2Tokenizer':
      return {
        normalizer: null,
        pre_tokenizer: { type: 'ByteLevel', add_prefix_space: pythonTruthy(kwargs['add_prefix_space'] ?? false), trim_offsets: true, use_regex: true },
        model: bpeModel(sources, { continuing_subword_prefix: '', end_of_word_suffix: '' }),
        decoder: BYTE_LEVEL_DECODER,
      };
    case 'Qwen2Tokenizer':
      return {
        normalizer: { type: 'NFC' },
        pre_tokenizer: {
          type: 'Sequence',
          pretokenizers: [
            { type: 'Split', pattern: { Regex: QWEN2_PRETOKENIZE_REGEX }, behavior: 'Isolated', invert: false },
            { type: 'ByteLevel', add_prefix_space: pythonTruthy(kwargs['add_prefix_space'] ?? false), trim_offsets: true, use_regex: false },
          ],
        },
        model: bpeModel(sources, { continuing_subword_prefix: '', end_of_word_suffix: '' }),
        decoder: BYTE_LEVEL_DECODER,
      };
  }
}

/** TokenizersBackend.update_post_processor: `[bos] $A [eos]` as add_bos_token / add_eos_token say. */
function bosEosTemplate(bos: { content: string; id: number } | undefined, eos: { content: string; id: number } | undefined): JsonObject {
  const single: JsonObject[] = [];
  const pair: JsonObject[] = [];
  const specialTokens: JsonObject = {};
  const special = (token: { content: string; id: number }, typeId: number): JsonObject => {
    specialTokens[token.content] = { id: token.content, ids: [token.id], tokens: [token.content] };
    return { SpecialToken: { id: token.content, type_id: typeId } };
  };
  if (bos !== undefined) single.push(special(bos, 0));
  single.push({ Sequence: { id: 'A', type_id: 0 } });
  if (eos !== undefined) single.push(special(eos, 0));
  pair.push(...single);
  if (bos !== undefined) pair.push(special(bos, 1));
  pair.push({ Sequence: { id: 'B', type_id: 1 } });
  if (eos !== undefined) pair.push(special(eos, 1));
  return { type: 'TemplateProcessing', single, pair, special_tokens: specialTokens };
}

/** The tokenizer.json object of the tokenizer transformers 5.17 builds with class `cls` from these files. */
export function transformersTokenizerJson(sources: TokenizerSources, cls: TokenizerClass): JsonObject {
  const kwargs = initKwargs(sources);
  const vocab = vocabMap(sources);
  const added = new AddedVocabulary(vocab, vocabSize(vocab));
  const base: JsonObject = { ...sources.tokenizerJson };
  const existing: AddedTokenSpec[] = [];
  if (cls === 'TokenizersBackend') {
    for (const raw of tokenizerJsonAddedTokens(sources)) {
      const token = addedTokenFrom(raw, 'added_tokens entry', sources.tokenizerFile);
      added.add(token, raw['id'] as number);
      existing.push(token);
    }
  } else {
    Object.assign(base, rebuiltPipeline(cls, sources, kwargs));
  }

  // TokenizersBackend.__init__: added_tokens_decoder entries the backend lacks, then missing special tokens.
  const toAdd: AddedTokenSpec[] = [];
  for (const [, token] of decoderTokens(sources, kwargs)) {
    if (!existing.some((e) => sameToken(e, token)) && !toAdd.some((e) => sameToken(e, token))) toAdd.push(token);
  }
  const decoderByContent = new Map(toAdd.map((t) => [t.content, t] as const));
  for (const token of existing) decoderByContent.set(token.content, token);
  const named = namedSpecials(cls, kwargs);
  const extras = extraSpecials(cls, kwargs);
  const asToken = (value: string | AddedTokenSpec): AddedTokenSpec =>
    typeof value === 'string' ? (decoderByContent.get(value) ?? plainSpecial(value)) : value;
  const encoder = new Set([...existing.map((t) => t.content), ...toAdd.map((t) => t.content)]);
  for (const value of [...named.values(), ...extras]) {
    const token = asToken(value);
    if (!encoder.has(token.content)) {
      toAdd.push(token.special ? token : { ...token, special: true });
      encoder.add(token.content);
    }
  }
  for (const token of toAdd) added.add(token);
  if (cls === 'Qwen2Tokenizer') {
    // self.add_tokens([AddedToken(token, special=True) for token in self.all_special_tokens])
    for (const value of [...named.values(), ...extras]) added.add(plainSpecial(contentOf(value)));
  }
  // _post_init: the named and extra special tokens once more, as special tokens
  for (const value of [...named.values(), ...extras]) {
    const token = asToken(value);
    added.add(token.special ? token : { ...token, special: true });
  }
  base['added_tokens'] = added.serialize();

  const explicitBosEos = 'add_bos_token' in kwargs || 'add_eos_token' in kwargs || cls === 'CodeLlamaTokenizer';
  const postProcessor = sources.tokenizerJson['post_processor'] ?? null;
  if (explicitBosEos || postProcessor === null) {
    const addBos = cls === 'CodeLlamaTokenizer' && !('add_bos_token' in kwargs) ? true : pythonTruthy(kwargs['add_bos_token']);
    const addEos = pythonTruthy(kwargs['add_eos_token']);
    const specialOf = (attribute: SpecialTokenAttribute, wanted: boolean): { content: string; id: number } | undefined => {
      const value = named.get(attribute);
      if (!wanted || value === undefined) return undefined;
      const content = contentOf(value);
      const id = added.idOf(content);
      return id === undefined ? undefined : { content, id };
    };
    base['post_processor'] = bosEosTemplate(specialOf('bos_token', addBos), specialOf('eos_token', addEos));
  }
  return base;
}
