/** External-data weights through symlinks, as in a Hugging Face cache snapshot (blobs/ + snapshots/). */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { copyFile, mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModelDir } from '../../src/model/model-dir.js';
import { createModelRunner } from '../../src/onnx/model-runner.js';
import { createBlockRunner } from '../../src/onnx/block-runner.js';
import { externalDataLayout } from '../../src/onnx/checkpoint-weights.js';

const ROOT = join(import.meta.dirname, '..', '..');
const TINY = join(ROOT, 'test/fixtures/models/tiny-llama');
let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'bwq-hfcache-'));
  const snap = join(tmp, 'models--x', 'snapshots', 'abc123');
  const blobs = join(tmp, 'models--x', 'blobs');
  await mkdir(snap, { recursive: true });
  await mkdir(blobs, { recursive: true });
  for (const f of await readdir(TINY)) {
    if (f.endsWith('.safetensors')) {
      await copyFile(join(TINY, f), join(blobs, `sha-${f}`));
      await symlink(join('..', '..', 'blobs', `sha-${f}`), join(snap, f));
    } else {
      await copyFile(join(TINY, f), join(snap, f));
    }
  }
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('layout root is the common directory of the real paths; locations stay inside it', async () => {
  const layout = await externalDataLayout([join(tmp, 'models--x/snapshots/abc123/model-00001-of-00004.safetensors'), join(tmp, 'models--x/snapshots/abc123/model-00002-of-00004.safetensors')]);
  expect(layout.root.endsWith(join('models--x', 'blobs'))).toBe(true);
  expect([...layout.locations.values()]).toEqual(['sha-model-00001-of-00004.safetensors', 'sha-model-00002-of-00004.safetensors']);
});

test('a symlinked sharded snapshot gives the same logits as the plain directory (full model and block runner)', async () => {
  const ids = Int32Array.from([5, 900, 33, 1200, 7, 64, 2048, 11]);
  const plain = await openModelDir(TINY);
  const linked = await openModelDir(join(tmp, 'models--x/snapshots/abc123'));
  const a = await createModelRunner(plain, { threads: 1 });
  const b = await createModelRunner(linked, { threads: 1 });
  const la = await a.logits(ids, 1, 8);
  const lb = await b.logits(ids, 1, 8);
  expect(Array.from(lb)).toEqual(Array.from(la));
  const blocks = await createBlockRunner(linked, { threads: 1 });
  let h = await blocks.embed(ids, 1, 8);
  for (let l = 0; l < linked.config.numLayers; l++) h = (await blocks.run(l, h, 1, 8)).output;
  const viaBlocks = await blocks.logits(h, 1, 8);
  let d = 0;
  for (let i = 0; i < la.length; i++) d = Math.max(d, Math.abs(viaBlocks[i]! - la[i]!));
  expect(d).toBeLessThan(1e-4);
  for (const r of [a, b]) await r.close();
  await blocks.close();
  await plain.checkpoint.close();
  await linked.checkpoint.close();
});
