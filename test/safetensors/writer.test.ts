import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { writeSafetensors, type TensorToWrite } from '../../src/safetensors/writer.js';
import { expectBwqError } from './helpers.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

/** Every safetensors file committed as a fixture (all written by Python's safetensors). */
const FIXTURES = [
  'test/fixtures/safetensors/dtypes.safetensors',
  'test/fixtures/safetensors/sharded/model-00001-of-00002.safetensors',
  'test/fixtures/safetensors/sharded/model-00002-of-00002.safetensors',
  'test/fixtures/models/tiny-gpt2/model.safetensors',
  'test/fixtures/models/tiny-llama/model-00001-of-00004.safetensors',
  'test/fixtures/models/tiny-llama/model-00002-of-00004.safetensors',
  'test/fixtures/models/tiny-llama/model-00003-of-00004.safetensors',
  'test/fixtures/models/tiny-llama/model-00004-of-00004.safetensors',
  'test/fixtures/models/tiny-mistral/model.safetensors',
  'test/fixtures/models/tiny-qwen2/model.safetensors',
  'test/fixtures/models/tiny-qwen3/model.safetensors',
  'test/fixtures/reference/sotu-llama.logits.safetensors',
  'test/fixtures/reference/tiny-gpt2.logits.safetensors',
  'test/fixtures/reference/tiny-llama.logits.safetensors',
  'test/fixtures/reference/tiny-mistral.logits.safetensors',
  'test/fixtures/reference/tiny-qwen2.logits.safetensors',
  'test/fixtures/reference/tiny-qwen3.logits.safetensors',
  'models/sotu-llama/model.safetensors',
];

describe('read -> write -> read is bit-exact for every fixture', () => {
  const dir = tempDir('bwq-wr-');
  for (const fixture of FIXTURES) {
    test(fixture, async () => {
      const source = await SafetensorsFile.open(fixture);
      // Python lays data out in header order; keep that order so the layout can match byte for byte.
      const infos = source.names().map((n) => source.info(n));
      const out = join(dir, fixture.replace(/\//g, '_'));
      await writeSafetensors(out, infos.map((i) => ({
        name: i.name, dtype: i.dtype, shape: i.shape, data: () => source.readBytes(i.name),
      })), Object.keys(source.metadata).length > 0 ? source.metadata : undefined);
      const copy = await SafetensorsFile.open(out);
      expect(copy.names()).toEqual(source.names());
      expect(copy.metadata).toEqual(source.metadata);
      for (const name of source.names()) {
        const a = source.info(name);
        const b = copy.info(name);
        expect([b.dtype, b.shape]).toEqual([a.dtype, a.shape]);
        expect(Buffer.from(await copy.readBytes(name)).equals(Buffer.from(await source.readBytes(name)))).toBe(true);
      }
      await copy.close();
      await source.close();
      // Same header serialization and padding as Python's safetensors: identical files.
      expect(readFileSync(out).equals(readFileSync(fixture))).toBe(true);
    });
  }
});

describe('writeSafetensors', () => {
  const dir = tempDir('bwq-w-');

  test('typed arrays of several kinds, metadata, header padding', async () => {
    const p = join(dir, 'kinds.safetensors');
    const f32 = Float32Array.from([1.5, -2, 3.25]);
    const i64 = BigInt64Array.from([-(2n ** 63n), 2n ** 53n + 1n]);
    const bf16 = Uint16Array.from([0x3f80, 0xc020]); // 1, -2.5
    const i8 = Int8Array.from([-128, 127, 0, 5]);
    await writeSafetensors(p, [
      { name: 'w', dtype: 'F32', shape: [3], data: f32 },
      { name: 'step', dtype: 'I64', shape: [2], data: i64 },
      { name: 'h', dtype: 'BF16', shape: [1, 2], data: bf16 },
      { name: 'c', dtype: 'I8', shape: [2, 2], data: i8 },
      { name: 'none', dtype: 'F16', shape: [0, 4], data: new Uint16Array(0) },
      { name: 's', dtype: 'F64', shape: [], data: Float64Array.from([Math.PI]) },
    ], { format: 'pt', note: 'ünïcode "quoted"' });
    const bytes = readFileSync(p);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    const headerText = bytes.subarray(8, 8 + headerLength).toString('utf8');
    expect(headerText.startsWith('{"__metadata__":{"format":"pt","note":"ünïcode \\"quoted\\""},"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}')).toBe(true);
    const json = headerText.trimEnd();
    expect(json.endsWith('"data_offsets":[36,44]}}')).toBe(true);
    expect(Buffer.byteLength(headerText) - Buffer.byteLength(json)).toBeLessThan(8);
    expect(bytes.length).toBe(8 + headerLength + 12 + 16 + 4 + 4 + 0 + 8);
    const f = await SafetensorsFile.open(p);
    expect(f.names()).toEqual(['w', 'step', 'h', 'c', 'none', 's']);
    expect(f.metadata).toEqual({ format: 'pt', note: 'ünïcode "quoted"' });
    expect([...(await f.readFloat32('w'))]).toEqual([1.5, -2, 3.25]);
    const raw = await f.readBytes('step');
    expect([...new BigInt64Array(raw.buffer, 0, 2)]).toEqual([...i64]);
    expect([...(await f.readFloat32('h'))]).toEqual([1, -2.5]);
    expect([...(await f.readFloat32('c'))]).toEqual([-128, 127, 0, 5]);
    expect((await f.readTensor('none')).shape).toEqual([0, 4]);
    expect([...(await f.readFloat32('s'))]).toEqual([Math.fround(Math.PI)]);
    await f.close();
  });

  test('no metadata and no tensors gives the 8-byte-padded empty header', async () => {
    const p = join(dir, 'empty.safetensors');
    await writeSafetensors(p, []);
    const bytes = readFileSync(p);
    expect(bytes.length).toBe(16);
    expect(bytes.readBigUInt64LE(0)).toBe(8n);
    expect(bytes.subarray(8).toString('latin1')).toBe('{}      ');
    const f = await SafetensorsFile.open(p);
    expect(f.names()).toEqual([]);
    await f.close();
  });

  test('views into larger buffers write only their own bytes', async () => {
    const p = join(dir, 'view.safetensors');
    const big = Float32Array.from([9, 1, 2, 3, 9]);
    await writeSafetensors(p, [{ name: 'v', dtype: 'F32', shape: [3], data: big.subarray(1, 4) }]);
    const f = await SafetensorsFile.open(p);
    expect([...(await f.readFloat32('v'))]).toEqual([1, 2, 3]);
    await f.close();
  });

  test('lazy producers run one at a time, in order', async () => {
    const p = join(dir, 'lazy.safetensors');
    const events: string[] = [];
    let live = 0;
    let maxLive = 0;
    const tensors: TensorToWrite[] = [0, 1, 2, 3].map((i) => ({
      name: `t${i}`, dtype: 'F32', shape: [1000], data: async () => {
        live++;
        maxLive = Math.max(maxLive, live);
        events.push(`start ${i}`);
        await new Promise((r) => setTimeout(r, 5));
        const data = new Float32Array(1000).fill(i);
        events.push(`end ${i}`);
        live--;
        return data;
      },
    }));
    await writeSafetensors(p, tensors);
    expect(maxLive).toBe(1);
    expect(events).toEqual(['start 0', 'end 0', 'start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3']);
    const f = await SafetensorsFile.open(p);
    expect((await f.readFloat32('t2'))[999]).toBe(2);
    await f.close();
  });

  test('replaces an existing file atomically', async () => {
    const p = join(dir, 'replace.safetensors');
    writeFileSync(p, 'old');
    await writeSafetensors(p, [{ name: 'x', dtype: 'U8', shape: [1], data: Uint8Array.from([4]) }]);
    const f = await SafetensorsFile.open(p);
    expect([...(await f.readBytes('x'))]).toEqual([4]);
    await f.close();
  });

  const noLeftovers = (d: string, name: string): void => {
    expect(existsSync(join(d, name))).toBe(false);
    expect(readdirSync(d).filter((f) => f.includes(name))).toEqual([]);
  };

  test('eager data of the wrong size is rejected before anything is written', async () => {
    const d = tempDir('bwq-w-bad-');
    const p = join(d, 'bad.safetensors');
    await expectBwqError(writeSafetensors(p, [{ name: 'w', dtype: 'F16', shape: [3], data: new Float32Array(3) }]), p,
      /tensor 'w' has 12 bytes of data but F16 \[3\] needs 6/);
    noLeftovers(d, 'bad.safetensors');
  });

  test('a lazy producer of the wrong size leaves no partial file', async () => {
    const d = tempDir('bwq-w-bad-');
    const p = join(d, 'bad.safetensors');
    await expectBwqError(writeSafetensors(p, [
      { name: 'ok', dtype: 'F32', shape: [2], data: new Float32Array(2) },
      { name: 'w', dtype: 'F32', shape: [2, 2], data: async () => new Float32Array(3) },
    ]), p, /tensor 'w' has 12 bytes of data but F32 \[2, 2\] needs 16/);
    noLeftovers(d, 'bad.safetensors');
  });

  test('a failing producer leaves no partial file and passes its error on', async () => {
    const d = tempDir('bwq-w-bad-');
    const p = join(d, 'bad.safetensors');
    await expect(writeSafetensors(p, [
      { name: 'w', dtype: 'F32', shape: [2], data: async () => { throw new Error('boom'); } },
    ])).rejects.toThrow('boom');
    noLeftovers(d, 'bad.safetensors');
  });

  test('duplicate names, reserved name, bad shapes and non-string metadata are rejected', async () => {
    const p = join(dir, 'never.safetensors');
    const one = (name: string): TensorToWrite => ({ name, dtype: 'U8', shape: [1], data: new Uint8Array(1) });
    await expectBwqError(writeSafetensors(p, [one('a'), one('a')]), p, /duplicate tensor name 'a'/);
    await expectBwqError(writeSafetensors(p, [one('__metadata__')]), p, /'__metadata__' is not a valid tensor name/);
    await expectBwqError(writeSafetensors(p, [{ name: 'a', dtype: 'U8', shape: [-1], data: new Uint8Array(0) }]), p, /bad shape \[-1\]/);
    await expectBwqError(writeSafetensors(p, [{ name: 'a', dtype: 'X9' as never, shape: [1], data: new Uint8Array(1) }]), p, /unknown dtype 'X9'/);
    await expectBwqError(writeSafetensors(p, [one('a')], { n: 3 as unknown as string }), p, /metadata value of 'n' is not a string/);
    expect(existsSync(p)).toBe(false);
  });
});
