import { describe, expect, it } from 'vitest';
import { BENCH_CONFIGS, loadBenchConfig } from '../../src/bench/e2e.js';
import { expectedShapes, modelWeightNames } from '../../src/model/weights.js';

// parameter counts of the published checkpoints (their model cards / safetensors index totals)
const PARAMETERS: Record<string, number> = {
  'llama-2-7b': 6_738_415_616,
  'llama-3-8b': 8_030_261_248,
  'qwen3-8b': 8_190_735_360,
  'llama-2-70b': 68_976_648_192,
};

describe('bench configs', () => {
  it.each(BENCH_CONFIGS.map((name) => [name]))('%s has the published checkpoint\'s shapes', (name) => {
    const { config } = loadBenchConfig(name);
    let total = 0;
    for (const shape of expectedShapes(config, modelWeightNames(config)).values()) total += shape.reduce((p, d) => p * d, 1);
    expect(total).toBe(PARAMETERS[name]);
  });
});
