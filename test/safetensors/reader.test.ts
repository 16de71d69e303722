import { closeSync, openSync, readFileSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { SafetensorsFile } from '../../src/safetensors/reader.js';
import { buildFile, expectBwqError } from './helpers.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

const FIXTURE = 'test/fixtures/safetensors/dtypes.safetensors';
const expected = JSON.parse(readFileSync('test/fixtures/safetensors/dtypes.expected.json', 'utf8')) as {
  metadata: Record<string, string>;
  tensors: Record<string, { dtype: string; shape: number[]; values: (number | string)[] }>;
};
const TORCH_TO_ST: Record<string, string> = {
  float32: 'F32', float64: 'F64', float16: 'F16', bfloat16: 'BF16', int8: 'I8', uint8: 'U8', int16: 'I16',
  int32: 'I32', int64: 'I64', bool: 'BOOL',
};

function decodeExpected(v: number | string): number {
  if (v === 'nan') return NaN;
  if (v === 'inf') return Infinity;
  if (v === '-inf') return -Infinity;
  if (v === '-0') return -0;
  if (typeof v === 'string') return Number(BigInt(v)); // int64 as decimal string
  return v;
}

function sameFloat(a: number, b: number): boolean {
  return Number.isNaN(a) ? Number.isNaN(b) : Object.is(a, b);
}

describe('reading dtypes.safetensors (written by Python safetensors)', () => {
  let file: SafetensorsFile;
  beforeAll(async () => {
    file = await SafetensorsFile.open(FIXTURE);
  });
  afterAll(async () => {
    await file.close();
  });

  test('metadata, names, dtypes and shapes', () => {
    expect(file.metadata).toEqual(expected.metadata);
    expect(file.names().sort()).toEqual(Object.keys(expected.tensors).sort());
    for (const [name, t] of Object.entries(expected.tensors)) {
      const info = file.info(name);
      expect(info.dtype).toBe(TORCH_TO_ST[t.dtype]);
      expect(info.shape).toEqual(t.shape);
      expect(info.file).toBe(FIXTURE);
    }
    // header length 848 (from the file's first 8 bytes) + 8
    expect(file.dataStart).toBe(856);
    expect(file.info('i64').fileOffset).toBe(856);
    expect(file.info('f64').fileOffset).toBe(856 + 40);
    expect(file.info('bool').byteLength).toBe(6);
    expect(file.info('empty').byteLength).toBe(0);
  });

  for (const [name, t] of Object.entries(expected.tensors)) {
    test(`values of '${name}' (${t.dtype}) convert exactly to float32`, async () => {
      const values = await file.readFloat32(name);
      expect(values).toBeInstanceOf(Float32Array);
      expect(values.length).toBe(t.values.length);
      for (let i = 0; i < values.length; i++) {
        const want = Math.fround(decodeExpected(t.values[i]!));
        if (!sameFloat(values[i]!, want)) throw new Error(`${name}[${i}]: got ${values[i]} want ${want}`);
      }
      const tensor = await file.readTensor(name);
      expect(tensor.shape).toEqual(t.shape);
      expect(tensor.data.length).toBe(t.values.length);
    });
  }

  test('int64 raw bytes are exact (beyond 2^53)', async () => {
    const bytes = await file.readBytes('i64');
    const ints = new BigInt64Array(bytes.buffer, bytes.byteOffset, 5);
    expect([...ints]).toEqual(expected.tensors['i64']!.values.map((v) => BigInt(v as string)));
  });

  test('unknown tensor name', async () => {
    expect(() => file.info('nope')).toThrow(/no tensor named 'nope'/);
  });
});

describe('invalid files: one-line BwqError naming the file', () => {
  const dir = tempDir();
  const valid = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'U8', shape: [2, 2], data_offsets: [8, 12] } };
  const data12 = new Uint8Array(12);
  let n = 0;
  const path = (): string => join(dir, `bad-${n++}.safetensors`);
  const headerOf = (entries: Record<string, unknown>): string => JSON.stringify(entries);

  test('a valid hand-built file opens (control)', async () => {
    const p = buildFile(path(), headerOf(valid), data12);
    const f = await SafetensorsFile.open(p);
    expect(f.names()).toEqual(['a', 'b']);
    await f.close();
  });

  const cases: [string, () => string, RegExp][] = [
    ['file shorter than 8 bytes', () => {
      const p = path();
      writeFileSync(p, new Uint8Array([1, 2, 3, 4, 5]));
      return p;
    }, /5 bytes is shorter than the 8-byte header length/],
    ['empty file', () => {
      const p = path();
      writeFileSync(p, new Uint8Array(0));
      return p;
    }, /0 bytes is shorter than the 8-byte/],
    ['header length larger than the file', () => buildFile(path(), headerOf(valid), data12, 1000n),
      /header length 1000 exceeds the \d+ bytes after the length field/],
    ['header length near 2^64', () => buildFile(path(), headerOf(valid), data12, 0xffffffffffffffffn),
      /header length 18446744073709551615 exceeds/],
    ['header not UTF-8', () => buildFile(path(), new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), /header is not valid UTF-8/],
    ['header not JSON', () => buildFile(path(), '{"a": '), /header is not valid JSON/],
    ['header JSON is an array', () => buildFile(path(), '[1, 2]'), /header JSON is not an object/],
    ['header JSON is a string', () => buildFile(path(), '"abc"'), /header JSON is not an object/],
    ['entry missing dtype', () => buildFile(path(), headerOf({ a: { shape: [2], data_offsets: [0, 8] } }), new Uint8Array(8)),
      /tensor 'a': missing 'dtype'/],
    ['entry missing shape', () => buildFile(path(), headerOf({ a: { dtype: 'F32', data_offsets: [0, 8] } }), new Uint8Array(8)),
      /tensor 'a': missing 'shape'/],
    ['entry missing data_offsets', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [2] } }), new Uint8Array(8)),
      /tensor 'a': missing 'data_offsets'/],
    ['entry not an object', () => buildFile(path(), headerOf({ a: [1, 2] })), /tensor 'a': entry is not an object/],
    ['dtype not a string', () => buildFile(path(), headerOf({ a: { dtype: 4, shape: [2], data_offsets: [0, 8] } }), new Uint8Array(8)),
      /tensor 'a': dtype is not a string/],
    ['shape not an array', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: '2', data_offsets: [0, 8] } }), new Uint8Array(8)),
      /tensor 'a': shape is not an array/],
    ['data_offsets not a pair', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [2], data_offsets: [8] } }), new Uint8Array(8)),
      /tensor 'a': data_offsets is not a \[begin, end\] pair/],
    ['data_offsets not integers', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [2], data_offsets: ['0', 8] } }), new Uint8Array(8)),
      /tensor 'a': data_offsets \["0",8\] are not non-negative integers/],
    ['negative data_offsets', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [2], data_offsets: [-8, 0] } }), new Uint8Array(8)),
      /are not non-negative integers/],
    ['unknown dtype', () => buildFile(path(), headerOf({ a: { dtype: 'F8_E5M2', shape: [2], data_offsets: [0, 2] } }), new Uint8Array(2)),
      /tensor 'a': unknown dtype 'F8_E5M2'/],
    ['negative shape', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }), new Uint8Array(8)),
      /tensor 'a': shape \[-2\] has a dimension that is not a non-negative integer/],
    ['non-integer shape', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [2.5], data_offsets: [0, 8] } }), new Uint8Array(8)),
      /tensor 'a': shape \[2.5\] has a dimension that is not a non-negative integer/],
    ['dtype size x elements != byte length', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }), new Uint8Array(8)),
      /tensor 'a': F32 \[3\] needs 12 bytes but data_offsets span 8/],
    ['end beyond the data region', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }), new Uint8Array(8)),
      /tensor 'a': data_offsets end 16 is beyond the 8-byte data region/],
    ['begin after end', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }), new Uint8Array(8)),
      /tensor 'a': data_offsets begin 8 is after end 4/],
    ['overlapping ranges', () => buildFile(path(), headerOf({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    }), data12), /tensors 'a' and 'b' have overlapping data ranges/],
    ['identical ranges', () => buildFile(path(), headerOf({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    }), new Uint8Array(8)), /overlapping data ranges/],
    ['gap between tensors', () => buildFile(path(), headerOf({
      a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
    }), data12), /gap of 4 unused bytes before tensor 'b'/],
    ['gap at the start', () => buildFile(path(), headerOf({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }), new Uint8Array(8)),
      /gap of 4 unused bytes before tensor 'a'/],
    ['trailing bytes', () => buildFile(path(), headerOf(valid), new Uint8Array(15)), /3 trailing bytes after the last tensor/],
    ['data but no tensors', () => buildFile(path(), '{}', new Uint8Array(4)), /4 trailing bytes/],
    ['duplicate tensor names', () => buildFile(path(),
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
      new Uint8Array(8)), /duplicate tensor name 'a'/],
    ['duplicate names written with escapes', () => buildFile(path(),
      '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\\u0061":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
      new Uint8Array(4)), /duplicate tensor name 'a'/],
    ['duplicate __metadata__', () => buildFile(path(), '{"__metadata__":{},"__metadata__":{"x":"y"}}'),
      /duplicate tensor name '__metadata__'/],
    ['__metadata__ value not a string', () => buildFile(path(), '{"__metadata__":{"format":"pt","step":3}}'),
      /__metadata__ value of 'step' is not a string \(got 3\)/],
    ['__metadata__ not an object', () => buildFile(path(), '{"__metadata__":"pt"}'), /__metadata__ is not an object/],
  ];

  for (const [title, make, message] of cases) {
    test(title, async () => {
      const p = make();
      await expectBwqError(SafetensorsFile.open(p), p, message);
    });
  }

  test('missing file', async () => {
    const p = join(dir, 'absent.safetensors');
    await expectBwqError(SafetensorsFile.open(p), p, /file not found/);
  });

  test('a directory', async () => {
    await expectBwqError(SafetensorsFile.open(dir), dir, /is a directory/);
  });

  test('nested keys named like tensors are not duplicates; escaped quotes in names are handled', async () => {
    const header = '{"__metadata__":{"a":"x","b":"say \\"a\\""},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
      + '"q\\"uote":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}';
    const p = buildFile(path(), header, new Uint8Array([7, 9]));
    const f = await SafetensorsFile.open(p);
    expect(f.names()).toEqual(['a', 'q"uote']);
    expect(f.metadata).toEqual({ a: 'x', b: 'say "a"' });
    expect([...(await f.readBytes('q"uote'))]).toEqual([9]);
    await f.close();
  });

  test('opening and reading touch only the header and the requested range (sparse 5 GiB file)', async () => {
    const big = 5 * 2 ** 30;
    const header = headerOf({
      big: { dtype: 'U8', shape: [big], data_offsets: [0, big] },
      small: { dtype: 'F32', shape: [2], data_offsets: [big, big + 8] },
    });
    const p = buildFile(path(), header);
    const dataStart = 8 + Buffer.byteLength(header);
    truncateSync(p, dataStart + big + 8); // sparse: no disk blocks for the 5 GiB tensor
    const fd = openSync(p, 'r+');
    writeSync(fd, Buffer.from(Float32Array.from([1.5, -3]).buffer), 0, 8, dataStart + big);
    closeSync(fd);
    expect(statSync(p).size).toBe(dataStart + big + 8);
    const f = await SafetensorsFile.open(p);
    expect(f.info('small').fileOffset).toBe(dataStart + big);
    expect([...(await f.readFloat32('small'))]).toEqual([1.5, -3]);
    await f.close();
    writeFileSync(p, ''); // release the sparse file
  });

  test('reading after close fails with a BwqError', async () => {
    const p = buildFile(path(), headerOf(valid), data12);
    const f = await SafetensorsFile.open(p);
    await f.close();
    await expectBwqError(f.readBytes('a'), p, /already closed/);
  });

  test('a file truncated after opening is reported, not returned short', async () => {
    const p = buildFile(path(), headerOf(valid), data12);
    const f = await SafetensorsFile.open(p);
    writeFileSync(p, new Uint8Array(10));
    await expectBwqError(f.readBytes('b'), p, /unexpected end of file/);
    await f.close();
  });
});
