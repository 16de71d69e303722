import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { Checkpoint } from '../../src/safetensors/checkpoint.js';
import { expectBwqError } from './helpers.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

const SHARDED = 'test/fixtures/safetensors/sharded';
const expected = JSON.parse(readFileSync(join(SHARDED, 'expected.json'), 'utf8')) as Record<string, number[]>;
const SHARD1 = 'model-00001-of-00002.safetensors';
const SHARD2 = 'model-00002-of-00002.safetensors';

function copyOf(files: string[], from = SHARDED): string {
  const dir = tempDir('bwq-ck-');
  for (const f of files) copyFileSync(join(from, f), join(dir, f));
  return dir;
}

describe('sharded checkpoint (Python safetensors + index)', () => {
  test('values of every tensor match expected.json', async () => {
    const ck = await Checkpoint.open(SHARDED);
    expect(ck.files).toEqual([join(SHARDED, SHARD1), join(SHARDED, SHARD2)]);
    expect(ck.indexFile).toBe(join(SHARDED, 'model.safetensors.index.json'));
    expect(ck.names().sort()).toEqual(Object.keys(expected).sort());
    for (const [name, values] of Object.entries(expected)) {
      const got = await ck.readFloat32(name);
      expect([...got]).toEqual(values.map((v) => Math.fround(v)));
    }
    expect(ck.info('layer.1.weight')).toMatchObject({ dtype: 'BF16', shape: [4, 8], file: join(SHARDED, SHARD2) });
    expect(ck.info('layer.0.bias')).toMatchObject({ dtype: 'F16', shape: [8], file: join(SHARDED, SHARD1) });
    const t = await ck.readTensor('layer.0.weight');
    expect(t.shape).toEqual([8, 4]);
    expect((await ck.readBytes('layer.1.step')).byteLength).toBe(8);
    expect(ck.has('layer.0.weight')).toBe(true);
    expect(ck.has('layer.9.weight')).toBe(false);
    expect(() => ck.info('layer.9.weight')).toThrow(/no tensor named 'layer.9.weight'/);
    await ck.close();
  });

  test('openPath accepts the index file and a single shard', async () => {
    const viaIndex = await Checkpoint.openPath(join(SHARDED, 'model.safetensors.index.json'));
    expect(viaIndex.names().length).toBe(4);
    await viaIndex.close();
    const viaFile = await Checkpoint.openPath(join(SHARDED, SHARD2));
    expect(viaFile.names()).toEqual(['layer.1.step', 'layer.1.weight']);
    expect(viaFile.metadata).toEqual({ format: 'pt' });
    await viaFile.close();
  });

  test('tiny-llama: four shards, every tensor reachable', async () => {
    const ck = await Checkpoint.open('test/fixtures/models/tiny-llama');
    expect(ck.files.length).toBe(4);
    expect(ck.names().length).toBe(2 * 9 + 3);
    expect(ck.info('lm_head.weight').file).toMatch(/model-00003-of-00004\.safetensors$/);
    await ck.close();
  });

  test('missing shard file', async () => {
    const dir = copyOf(['model.safetensors.index.json', SHARD1]);
    await expectBwqError(Checkpoint.open(dir), join(dir, SHARD2), /shard file 'model-00002-of-00002.safetensors' listed in model.safetensors.index.json is missing/);
  });

  test('tensor listed in the index but absent from its shard', async () => {
    const dir = copyOf([SHARD1, SHARD2]);
    const index = JSON.parse(readFileSync(join(SHARDED, 'model.safetensors.index.json'), 'utf8'));
    index.weight_map['layer.2.weight'] = SHARD2;
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    await expectBwqError(Checkpoint.open(dir), join(dir, SHARD2), /tensor 'layer.2.weight' is listed in model.safetensors.index.json but absent from this shard/);
  });

  const badIndex: [string, string, RegExp][] = [
    ['not JSON', '{"weight_map": ', /invalid index JSON \(/],
    ['not an object', '[]', /invalid index JSON: not an object/],
    ['no weight_map', '{"metadata": {}}', /invalid index JSON: missing "weight_map" object/],
    ['non-string shard', '{"weight_map": {"a": 3}}', /weight_map entry for 'a' is not a file name/],
    ['empty weight_map', '{"weight_map": {}}', /"weight_map" is empty/],
    ['shard outside the directory', '{"weight_map": {"a": "../x.safetensors"}}', /shard '..\/x.safetensors' is outside the checkpoint directory/],
  ];
  for (const [title, text, message] of badIndex) {
    test(`invalid index: ${title}`, async () => {
      const dir = copyOf([SHARD1, SHARD2]);
      const index = join(dir, 'model.safetensors.index.json');
      writeFileSync(index, text);
      await expectBwqError(Checkpoint.open(dir), index, message);
    });
  }

  test('a bad shard is reported with the shard name', async () => {
    const dir = copyOf(['model.safetensors.index.json', SHARD1]);
    writeFileSync(join(dir, SHARD2), new Uint8Array([1, 2, 3]));
    await expectBwqError(Checkpoint.open(dir), join(dir, SHARD2), /shorter than the 8-byte header length/);
  });
});

describe('directory resolution', () => {
  test('model.safetensors', async () => {
    const ck = await Checkpoint.open('test/fixtures/models/tiny-qwen2');
    expect(ck.files).toEqual([join('test/fixtures/models/tiny-qwen2', 'model.safetensors')]);
    expect(ck.indexFile).toBeUndefined();
    await ck.close();
  });

  test('the only other *.safetensors file', async () => {
    const dir = tempDir('bwq-ck-');
    copyFileSync(join(SHARDED, SHARD1), join(dir, 'weights.safetensors'));
    writeFileSync(join(dir, 'config.json'), '{}');
    const ck = await Checkpoint.open(dir);
    expect(ck.files).toEqual([join(dir, 'weights.safetensors')]);
    expect(ck.names()).toEqual(['layer.0.weight', 'layer.0.bias']);
    await ck.close();
  });

  test('several candidate files without an index', async () => {
    const dir = copyOf([SHARD1, SHARD2]);
    await expectBwqError(Checkpoint.open(dir), dir, /several \.safetensors files \(model-00001-of-00002.safetensors, model-00002-of-00002.safetensors\) and no model.safetensors.index.json/);
  });

  test('no weights at all', async () => {
    const dir = tempDir('bwq-ck-');
    mkdirSync(join(dir, 'sub'));
    await expectBwqError(Checkpoint.open(dir), dir, /no weights found \(expected model.safetensors or model.safetensors.index.json\)/);
  });

  test('missing directory', async () => {
    await expectBwqError(Checkpoint.open('/nonexistent/bwq-dir'), '/nonexistent/bwq-dir', /model directory not found/);
  });
});
