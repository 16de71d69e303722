/** src/model/generation-config.ts: where generation's eos ids come from, in order, and bad values. */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModelConfig } from '../../src/model/config.js';
import { loadEosTokenIds } from '../../src/model/generation-config.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';

const TINY = join(import.meta.dirname, '..', 'fixtures/models/tiny-llama'); // generation_config eos 2, config eos 2
let tmp: string;

async function variant(name: string, files: Record<string, unknown>, drop: string[] = []): Promise<string> {
  const dir = join(tmp, name);
  await cp(TINY, dir, { recursive: true });
  for (const f of drop) await rm(join(dir, f));
  for (const [f, content] of Object.entries(files)) await writeFile(join(dir, f), typeof content === 'string' ? content : JSON.stringify(content));
  return dir;
}

async function eosOf(dir: string): Promise<number[]> {
  return loadEosTokenIds(dir, await loadModelConfig(dir), await loadTokenizer(dir));
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'bwq-eos-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('eos token ids', () => {
  test('generation_config.json first (a number or a list)', async () => {
    expect(await eosOf(TINY)).toEqual([2]);
    expect(await eosOf(await variant('list', { 'generation_config.json': { eos_token_id: [5, 2] } }))).toEqual([5, 2]);
  });

  test("config.json's eos_token_id when generation_config.json is absent or has none", async () => {
    const config = JSON.parse(JSON.stringify(await loadModelConfig(TINY))).raw;
    expect(await eosOf(await variant('no-gen', { 'config.json': { ...config, eos_token_id: 3 } }, ['generation_config.json']))).toEqual([3]);
    expect(await eosOf(await variant('gen-null', { 'generation_config.json': { eos_token_id: null }, 'config.json': { ...config, eos_token_id: [4] } }))).toEqual([4]);
  });

  test("then the tokenizer's eos_token (one id), else none", async () => {
    const { eos_token_id: _drop, ...config } = (await loadModelConfig(TINY)).raw;
    const dir = await variant('tok', { 'config.json': config }, ['generation_config.json']);
    expect(await eosOf(dir)).toEqual([0]); // <|endoftext|>
    const none = await variant('none', { 'config.json': config }, ['generation_config.json', 'tokenizer_config.json']);
    expect(await eosOf(none)).toEqual([]);
  });

  test('bad values are one-line errors naming the file', async () => {
    await expect(eosOf(await variant('bad', { 'generation_config.json': { eos_token_id: 'x' } }))).rejects.toThrow(/eos_token_id must be a non-negative integer/);
    await expect(eosOf(await variant('bad-json', { 'generation_config.json': '{' }))).rejects.toThrow(/not valid JSON/);
  });
});
