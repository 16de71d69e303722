/** The float model fixtures with transformers reference logits (test/fixtures/reference, make_fixtures.py). */
export const FLOAT_FIXTURES: readonly [string, string][] = [
  ['tiny-llama', 'test/fixtures/models/tiny-llama'],
  ['tiny-mistral', 'test/fixtures/models/tiny-mistral'],
  ['tiny-qwen2', 'test/fixtures/models/tiny-qwen2'],
  ['tiny-qwen3', 'test/fixtures/models/tiny-qwen3'],
  ['sotu-llama', 'models/sotu-llama'],
];
