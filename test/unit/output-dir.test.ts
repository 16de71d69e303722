/**
 * Which OUT_DIR `--force` may replace (src/pipeline/output-dir.ts) and the atomic swap that replaces it
 * (src/fs/atomic.ts): nothing bwq did not write is ever deleted, and a failed replacement keeps the old output.
 */
import { mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BwqError } from '../../src/errors.js';
import { writeAtomically } from '../../src/fs/atomic.js';
import { BWQ_OUTPUT_FILES, checkOutputDirectory, isWithin } from '../../src/pipeline/output-dir.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

/** A directory as a previous bwq run leaves it. */
function bwqOutput(dir: string, extra: string[] = []): string {
  mkdirSync(dir, { recursive: true });
  for (const f of ['model.safetensors', 'model.packed.safetensors', 'config.json', 'tokenizer.json', ...extra]) writeFileSync(join(dir, f), 'old');
  writeFileSync(join(dir, 'quantize-report.json'), JSON.stringify({ bwq_version: '0.1.0', method: 'rtn' }));
  return dir;
}

async function refusal(promise: Promise<unknown>): Promise<BwqError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(BwqError);
  expect((error as BwqError).oneLine()).not.toContain('\n');
  return error as BwqError;
}

describe('checkOutputDirectory', () => {
  const root = tempDir('bwq-outdir-');
  const model = join(root, 'parent', 'model');
  mkdirSync(model, { recursive: true });
  writeFileSync(join(model, 'config.json'), '{}');
  const calib = join(root, 'calib.txt');
  writeFileSync(calib, 'text');
  const inputs = [{ path: model, what: 'input model directory' }, { path: calib, what: 'calibration file' }];
  const cwd = join(root, 'work', 'here');
  mkdirSync(cwd, { recursive: true });
  const ctx = { inputs, cwd };

  it('accepts a new path and, with --force, an empty directory or a previous bwq output', async () => {
    expect(await checkOutputDirectory(join(root, 'new', 'out'), false, ctx)).toBe(false);
    mkdirSync(join(root, 'empty'));
    expect(await checkOutputDirectory(join(root, 'empty'), true, ctx)).toBe(true);
    expect(await checkOutputDirectory(bwqOutput(join(root, 'prev'), ['generation_config.json']), true, ctx)).toBe(true);
  });

  it('without --force an existing directory is refused', async () => {
    const e = await refusal(checkOutputDirectory(bwqOutput(join(root, 'prev2')), false, ctx));
    expect(e.oneLine()).toBe(`${join(root, 'prev2')}: output directory already exists (pass --force to replace a previous bwq output)`);
  });

  it('refuses a directory holding files bwq did not write, naming them', async () => {
    const dir = bwqOutput(join(root, 'mixed'), []);
    writeFileSync(join(dir, 'notes.txt'), 'mine');
    mkdirSync(join(dir, 'sub'));
    const e = await refusal(checkOutputDirectory(dir, true, ctx));
    expect(e.oneLine()).toBe(`${dir}: holds files bwq did not write (notes.txt, sub); not replacing it (choose another -o)`);
    const plain = join(root, 'plain');
    mkdirSync(plain);
    writeFileSync(join(plain, 'config.json'), '{}');
    expect((await refusal(checkOutputDirectory(plain, true, ctx))).message).toMatch(/^has no quantize-report\.json, so bwq did not write it/);
    const fake = join(root, 'fake');
    mkdirSync(fake);
    writeFileSync(join(fake, 'quantize-report.json'), '{"hello": 1}');
    expect((await refusal(checkOutputDirectory(fake, true, ctx))).message).toMatch(/^quantize-report\.json is not a bwq report/);
  });

  it('refuses the input model, an ancestor of it and a directory holding the calibration file', async () => {
    expect((await refusal(checkOutputDirectory(model, true, ctx))).oneLine()).toBe(`${model}: is the input model directory; choose another -o`);
    const parent = dirname(model);
    const e = await refusal(checkOutputDirectory(parent, true, ctx));
    expect(e.oneLine()).toBe(`${parent}: contains the input model directory ${model}; choose another -o`);
    expect(e.exitCode).toBe(2);
    expect((await refusal(checkOutputDirectory(root, true, ctx))).message).toMatch(/^contains the input model directory/);
    // also without --force: the reason, not "already exists"
    expect((await refusal(checkOutputDirectory(parent, false, ctx))).message).toMatch(/^contains the input model directory/);
    const calibDir = join(root, 'calibdir');
    mkdirSync(calibDir);
    writeFileSync(join(calibDir, 'c.txt'), 'x');
    expect((await refusal(checkOutputDirectory(calibDir, true, { inputs: [{ path: join(calibDir, 'c.txt'), what: 'calibration file' }], cwd })))
      .message).toBe(`contains the calibration file ${join(calibDir, 'c.txt')}; choose another -o`);
  });

  it('refuses the working directory and its ancestors, even when they look like bwq outputs', async () => {
    bwqOutput(cwd);
    expect((await refusal(checkOutputDirectory(cwd, true, ctx))).oneLine()).toBe(`${cwd}: is the working directory; not replacing it (choose another -o)`);
    expect((await refusal(checkOutputDirectory(dirname(cwd), true, ctx))).message).toBe('is an ancestor of the working directory; not replacing it (choose another -o)');
  });

  it('compares real paths: a symlink to the model is the model; a symlinked OUT_DIR is refused', async () => {
    const link = join(root, 'model-link');
    symlinkSync(model, link);
    expect((await refusal(checkOutputDirectory(link, true, ctx))).message).toBe('is the input model directory; choose another -o');
    const target = bwqOutput(join(root, 'target'));
    const outLink = join(root, 'out-link');
    symlinkSync(target, outLink);
    expect((await refusal(checkOutputDirectory(outLink, true, ctx))).message).toMatch(/symbolic link/);
    writeFileSync(join(root, 'a-file'), 'x');
    expect((await refusal(checkOutputDirectory(join(root, 'a-file'), true, ctx))).message).toBe('output path exists and is not a directory');
  });

  it('isWithin', () => {
    expect(isWithin('/a/b', '/a')).toBe(true);
    expect(isWithin('/a', '/a')).toBe(true);
    expect(isWithin('/ab', '/a')).toBe(false);
    expect(isWithin('/a/..b/c', '/a')).toBe(true);
    expect(isWithin('/a', '/a/b')).toBe(false);
    expect(isWithin('/x', '/')).toBe(true);
  });

  it('the documented file list', () => {
    expect([...BWQ_OUTPUT_FILES].sort()).toEqual(['config.json', 'generation_config.json', 'model.packed.safetensors', 'model.safetensors',
      'model.safetensors.index.json', 'quantize-report.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
  });
});

describe('replacing an output directory (writeAtomically)', () => {
  const root = tempDir('bwq-swap-');

  const produceNew = async (temp: string): Promise<void> => {
    mkdirSync(temp);
    writeFileSync(join(temp, 'model.safetensors'), 'new');
  };

  it('swaps in the new output and removes the old one, leaving nothing beside it', async () => {
    const out = bwqOutput(join(root, 'ok'));
    await writeAtomically(out, produceNew, { replaceDirectory: true });
    expect(readdirSync(out)).toEqual(['model.safetensors']);
    expect(readFileSync(join(out, 'model.safetensors'), 'utf8')).toBe('new');
    expect(readdirSync(root)).toEqual(['ok']);
  });

  it('a refusal just before the swap, or a failure while producing, keeps the old output intact', async () => {
    const out = bwqOutput(join(root, 'keep'));
    const before = readdirSync(out).sort();
    await expect(writeAtomically(out, produceNew, {
      replaceDirectory: true,
      beforeReplace: async () => { throw new BwqError('changed during the run', { file: out }); },
    })).rejects.toThrow('changed during the run');
    await expect(writeAtomically(out, async (temp) => {
      await produceNew(temp);
      throw new Error('boom');
    }, { replaceDirectory: true })).rejects.toThrow('boom');
    expect(readdirSync(out).sort()).toEqual(before);
    expect(readFileSync(join(out, 'model.safetensors'), 'utf8')).toBe('old');
    expect(readdirSync(root).sort()).toEqual(['keep', 'ok']);
  });

  it('a failed swap (the new output cannot be renamed into place) puts the old output back', async () => {
    const out = bwqOutput(join(root, 'back'));
    // the finished temporary disappears just before the swap: old → backup succeeds, temporary → OUT fails
    await expect(writeAtomically(out, produceNew, {
      replaceDirectory: true,
      beforeReplace: async () => {
        for (const f of readdirSync(root).filter((n) => n.startsWith('.back.tmp-'))) rmSync(join(root, f), { recursive: true });
      },
    })).rejects.toThrow(BwqError);
    expect(readFileSync(join(out, 'quantize-report.json'), 'utf8')).toContain('bwq_version');
    expect(readFileSync(join(out, 'model.safetensors'), 'utf8')).toBe('old');
    expect(readdirSync(root).sort()).toEqual(['back', 'keep', 'ok']);
  });

  it('parents created for a failed output are removed again; existing ones are kept', async () => {
    const out = join(root, 'made', 'deep', 'out');
    await expect(writeAtomically(out, async () => { throw new Error('no'); }, { directory: true })).rejects.toThrow('no');
    expect(readdirSync(root).sort()).toEqual(['back', 'keep', 'ok']);
  });
});
