/**
 * Which tokenizer class transformers 5.17's `AutoTokenizer.from_pretrained(dir)` instantiates for a model
 * directory, from config.json's `model_type` (and `tokenizer_class`) and tokenizer_config.json's `tokenizer_class`
 * (transformers/models/auto/tokenization_auto.py). The class decides how the tokenizer is built:
 * `TokenizersBackend` (alias `PreTrainedTokenizerFast`) reads tokenizer.json as is; classes with their own
 * `__init__` (LlamaTokenizer, GPT2Tokenizer, Qwen2Tokenizer, CodeLlamaTokenizer, ...) keep only the vocabulary,
 * merges and post-processor of tokenizer.json and rebuild normalizer, pre-tokenizer, model options and decoder
 * (src/model/tokenizer-rebuild.ts, docs/TOKENIZER.md).
 */

/** The classes bwq reproduces; `TokenizersBackend` = tokenizer.json as is. */
export type RebuiltTokenizerClass = 'LlamaTokenizer' | 'CodeLlamaTokenizer' | 'GPT2Tokenizer' | 'Qwen2Tokenizer';
export type TokenizerClass = 'TokenizersBackend' | RebuiltTokenizerClass;

export type TokenizerClassChoice =
  | { readonly kind: 'reproduced'; readonly cls: TokenizerClass; readonly why: string }
  /** transformers rebuilds the tokenizer through a class bwq does not reproduce */
  | { readonly kind: 'unreproduced'; readonly name: string; readonly why: string };

export interface TokenizerClassInputs {
  /** config.json `model_type` (undefined without config.json) */
  readonly modelType: string | undefined;
  /** config.json `tokenizer_class` */
  readonly configTokenizerClass: string | undefined;
  /** tokenizer_config.json `tokenizer_class` */
  readonly tokenizerClass: string | undefined;
}

/** TOKENIZER_MAPPING_NAMES of transformers 5.17 for the architectures bwq runs (llama has no entry). */
const REGISTERED_BY_MODEL_TYPE: Readonly<Record<string, string>> = {
  gpt2: 'GPT2Tokenizer',
  qwen2: 'Qwen2Tokenizer',
  qwen3: 'Qwen2Tokenizer',
  // MistralCommonBackend only when mistral-common is installed and the folder has tekken.json, which bwq does not read.
  mistral: 'TokenizersBackend',
};

/** Model types whose hub tokenizer_class transformers 5.17 overrides with the registered one. */
const INCORRECT_HUB_CLASS_MODEL_TYPES: ReadonlySet<string> = new Set(['qwen2']);

/** Names transformers resolves to TokenizersBackend itself. */
const BACKEND_NAMES: ReadonlySet<string> = new Set([
  'TokenizersBackend', 'PreTrainedTokenizerFast', 'PythonBackend', 'BloomTokenizer', 'BloomTokenizerFast',
]);

const REPRODUCED: Readonly<Record<string, RebuiltTokenizerClass>> = {
  LlamaTokenizer: 'LlamaTokenizer',
  CodeLlamaTokenizer: 'CodeLlamaTokenizer',
  GPT2Tokenizer: 'GPT2Tokenizer',
  Qwen2Tokenizer: 'Qwen2Tokenizer',
};

/**
 * transformers 5.17 tokenizer classes with their own `__init__` (they rebuild the pipeline) that bwq does not
 * reproduce; listed with `tokenizer_class_from_name` over TOKENIZER_MAPPING_NAMES. Any other name resolves to
 * a class that reads tokenizer.json as is, or to none (then TokenizersBackend).
 */
const UNREPRODUCED: ReadonlySet<string> = new Set([
  'AlbertTokenizer', 'BartTokenizer', 'BarthezTokenizer', 'BertTokenizer', 'BigBirdTokenizer', 'BlenderbotTokenizer',
  'CLIPTokenizer', 'CamembertTokenizer', 'CohereTokenizer', 'DPRQuestionEncoderTokenizer', 'DebertaTokenizer',
  'DebertaV2Tokenizer', 'EsmcTokenizer', 'FunnelTokenizer', 'GPTNeoXTokenizer', 'GemmaTokenizer', 'HerbertTokenizer',
  'LEDTokenizer', 'LasrTokenizer', 'LayoutLMv2Tokenizer', 'LayoutLMv3Tokenizer', 'LayoutXLMTokenizer', 'LukeTokenizer',
  'LxmertTokenizer', 'MBart50Tokenizer', 'MBartTokenizer', 'MPNetTokenizer', 'MarkupLMTokenizer', 'MobileBertTokenizer',
  'MvpTokenizer', 'NllbTokenizer', 'NougatTokenizer', 'OpenAIGPTTokenizer', 'PegasusTokenizer', 'Qwen3_5Tokenizer',
  'ReformerTokenizer', 'RemBertTokenizer', 'RoFormerTokenizer', 'RobertaTokenizer', 'SeamlessM4TTokenizer',
  'Siglip2Tokenizer', 'SplinterTokenizer', 'T5Tokenizer', 'UdopTokenizer', 'VideoPrismTokenizer', 'WhisperTokenizer',
  'XGLMTokenizer', 'XLMRobertaTokenizer', 'XLNetTokenizer',
]);

function withoutFast(name: string): string {
  return name.endsWith('Fast') ? name.slice(0, -'Fast'.length) : name;
}

/** tokenizer_class_from_name, reduced to what it means for the pipeline; undefined when transformers has no such class. */
function resolveName(name: string, why: string): TokenizerClassChoice | undefined {
  const base = withoutFast(name);
  if (BACKEND_NAMES.has(name) || BACKEND_NAMES.has(base)) return { kind: 'reproduced', cls: 'TokenizersBackend', why };
  const reproduced = REPRODUCED[base];
  if (reproduced !== undefined) return { kind: 'reproduced', cls: reproduced, why };
  if (UNREPRODUCED.has(base)) return { kind: 'unreproduced', name: base, why };
  return undefined;
}

function backend(why: string): TokenizerClassChoice {
  return { kind: 'reproduced', cls: 'TokenizersBackend', why };
}

/** The class `AutoTokenizer.from_pretrained` of transformers 5.17 picks (remote code `auto_map` aside). */
export function transformersTokenizerClass(inputs: TokenizerClassInputs): TokenizerClassChoice {
  const { modelType, configTokenizerClass, tokenizerClass } = inputs;
  const hubClass = tokenizerClass ?? configTokenizerClass;
  const registered = modelType === undefined ? undefined : REGISTERED_BY_MODEL_TYPE[modelType];
  if (hubClass !== undefined && registered !== undefined && withoutFast(registered) !== withoutFast(hubClass)) {
    if (registered === 'TokenizersBackend') {
      return backend(`model_type ${modelType}: transformers reads tokenizer.json as is, whatever tokenizer_class says (${hubClass})`);
    }
    const useRegistered = INCORRECT_HUB_CLASS_MODEL_TYPES.has(modelType!);
    const name = useRegistered ? registered : hubClass;
    const why = useRegistered ? `model_type ${modelType} overrides tokenizer_class ${hubClass}` : `tokenizer_class ${hubClass}`;
    return resolveName(name, why) ?? backend(`tokenizer_class ${hubClass} is not a transformers class`);
  }
  if (tokenizerClass !== undefined) {
    return resolveName(tokenizerClass, `tokenizer_class ${tokenizerClass}`)
      ?? backend(`tokenizer_class ${tokenizerClass} is not a transformers class`);
  }
  if (configTokenizerClass !== undefined) {
    return resolveName(configTokenizerClass, `config.json tokenizer_class ${configTokenizerClass}`)
      ?? backend(`config.json tokenizer_class ${configTokenizerClass} is not a transformers class`);
  }
  if (registered !== undefined) return resolveName(registered, `model_type ${modelType}`)!;
  return backend('no tokenizer_class');
}
