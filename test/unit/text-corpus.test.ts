import { describe, expect, it } from 'vitest';
import { writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { readTextCorpus } from '../../src/data/text-corpus.js';
import { writeAtomically, writeFileAtomically } from '../../src/fs/atomic.js';
import { BwqError } from '../../src/errors.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();
const dir = tempDir('bwq-corpus-');

describe('readTextCorpus', () => {
  it('joins JSON-lines documents with a blank line and skips empty ones', async () => {
    const path = join(dir, 'a.jsonl');
    writeFileSync(path, '{"text":"alpha"}\n\n{"text":""}\n{"text":"beta"}\n');
    expect(await readTextCorpus(path)).toBe('alpha\n\nbeta');
  });
  it('reads a JSON array of objects', async () => {
    const path = join(dir, 'a.json');
    writeFileSync(path, JSON.stringify([{ text: 'x' }, { text: 'y' }]));
    expect(await readTextCorpus(path)).toBe('x\n\ny');
  });
  it('names the file and line of bad JSON', async () => {
    const path = join(dir, 'bad.jsonl');
    writeFileSync(path, '{"text":"ok"}\n{oops\n');
    await expect(readTextCorpus(path)).rejects.toThrow(/line 2: invalid JSON/);
    await expect(readTextCorpus(path)).rejects.toBeInstanceOf(BwqError);
  });
  it('rejects a missing file and an empty text', async () => {
    await expect(readTextCorpus(join(dir, 'missing.txt'))).rejects.toThrow(/file not found/);
    const empty = join(dir, 'empty.txt');
    writeFileSync(empty, '  \n');
    await expect(readTextCorpus(empty)).rejects.toThrow(/contains no text/);
  });
});

describe('atomic outputs', () => {
  it('leaves nothing behind when production fails', async () => {
    const out = join(dir, 'atomic');
    await writeFileAtomically(join(out, 'ok.bin'), new Uint8Array([1, 2, 3]));
    await expect(
      writeAtomically(join(out, 'fail.bin'), async (temp) => {
        writeFileSync(temp, 'partial');
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(readdirSync(out)).toEqual(['ok.bin']);
  });
});
