import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { LayerSpillStore, type QuantizedLinearArrays } from '../../src/pipeline/layer-spill.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

function linear(rows: number, cols: number, rank: number, seed: number): QuantizedLinearArrays {
  const f = (n: number, k: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 31 + i * k) * 1e3);
  return {
    rows, cols, rank,
    simulated: f(rows * cols, 1),
    qweight: Uint32Array.from({ length: rows * Math.ceil(cols / 32) }, (_, i) => (i * 2654435761 + seed) >>> 0),
    scales: f(rows, 2),
    lrA: f(rows * rank, 3),
    lrB: f(rank * cols, 4),
  };
}

const bytes = (a: Float32Array | Uint32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('LayerSpillStore', () => {
  it('gives back every part of every spilled linear byte for byte, then removes its directory', async () => {
    const dir = join(tempDir('bwq-spill-'), '.layers');
    const store = new LayerSpillStore(dir);
    const q = linear(5, 70, 2, 1);
    const o = linear(3, 33, 0, 2);
    const handles = await store.spill(0, new Map([['a.q_proj.weight', q], ['a.o_proj.weight', o]]));
    const more = await store.spill(1, new Map([['b.q_proj.weight', linear(4, 32, 1, 3)]]));
    const hq = handles.get('a.q_proj.weight')!;
    expect([hq.rows, hq.cols, hq.rank]).toEqual([5, 70, 2]);
    expect(await hq.read('simulated')).toEqual(bytes(q.simulated));
    expect(await hq.read('qweight')).toEqual(bytes(q.qweight));
    expect(await hq.read('wscale')).toEqual(bytes(q.scales));
    expect(await hq.read('lr_a')).toEqual(bytes(q.lrA));
    expect(await hq.read('lr_b')).toEqual(bytes(q.lrB));
    expect(await handles.get('a.o_proj.weight')!.read('qweight')).toEqual(bytes(o.qweight));
    await expect(handles.get('a.o_proj.weight')!.read('lr_a')).rejects.toThrow(/lr_a/);
    expect((await more.get('b.q_proj.weight')!.read('wscale')).byteLength).toBe(16);
    await store.dispose();
    expect(existsSync(dir)).toBe(false);
  });
});
