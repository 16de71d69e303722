/**
 * `bwq eval --dataset` and `bwq quantize --calib` on the bundled model with gzip, parquet and directory inputs
 * (test/fixtures/data/make_readers.py): the same text gives the same windows, so the perplexity on a parquet
 * file is the transformers reference of data/sotu-test.txt (its first document is that file's beginning).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/run-cli.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const ROOT = join(import.meta.dirname, '..', '..');
const DATA = join(ROOT, 'test/fixtures/data');
const documents = (JSON.parse(readFileSync(join(DATA, 'readers.expected.json'), 'utf8')) as { documents: string[] }).documents;
const reference = JSON.parse(readFileSync(join(ROOT, 'test/fixtures/reference/reference.json'), 'utf8')) as {
  models: Record<string, { ppl: { seqlen: number; windows: number; tokens: number; ppl: number }[] }>;
};
const REF = reference.models['sotu-llama']!.ppl.find((p) => p.seqlen === 256)!;
const tempDir = tempDirs();
const dir = tempDir('bwq-corpus-cli-');

interface EvalJson { dataset: string; windows: number; tokens: number; ppl: number }

async function evalJson(...args: string[]): Promise<EvalJson> {
  const r = await runCli('eval', '--seqlen', '256', '--max-windows', '8', '--threads', '1', '--json', ...args);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as EvalJson;
}

describe('bwq eval --dataset', () => {
  it('a parquet file: 8 windows of 256, the transformers perplexity of the same tokens', async () => {
    expect(REF).toMatchObject({ windows: 8, tokens: 2040 });
    const s = await evalJson('--dataset', join(DATA, 'docs-snappy.parquet'));
    expect(s).toMatchObject({ dataset: join(DATA, 'docs-snappy.parquet'), windows: 8, tokens: 2040 });
    expect(Math.abs(s.ppl / REF.ppl - 1)).toBeLessThan(1e-3);
    // --text-field, a .json.gz and a directory of three formats read the same text
    const content = await evalJson('--dataset', join(DATA, 'docs-content.parquet'), '--text-field', 'content');
    const c4Style = await evalJson('--dataset', join(DATA, 'docs.json.gz'));
    const directory = await evalJson('--dataset', join(DATA, 'dir'));
    for (const other of [content, c4Style, directory]) expect(other.ppl).toBe(s.ppl);
  });

  it('refuses a parquet file without the column, and an empty --text-field', async () => {
    const file = join(DATA, 'docs-content.parquet');
    const r = await runCli('eval', '--dataset', file, '--threads', '1');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`bwq: ${file}: no column "text" (columns: content, meta); name the text column with --text-field\n`);
    const empty = await runCli('eval', '--dataset', file, '--text-field', ' ');
    expect(empty.code).toBe(2);
    expect(empty.stderr).toBe('bwq: --text-field must name a JSON field or parquet column, got an empty name\n');
  });
});

describe('bwq quantize --calib', () => {
  const FAST = ['--method', 'rtn', '--nsamples', '2', '--seqlen', '64', '--stat-tokens', '64', '--threads', '2', '--json'];

  async function quantize(out: string, ...calib: string[]): Promise<{ layers: { groups: Record<string, { outputRelError: number }> }[] }> {
    const r = await runCli('quantize', ...FAST, '-o', join(dir, out), ...calib);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    return JSON.parse(r.stdout);
  }

  it('a .jsonl.gz file and a parquet column calibrate as the same text in a .txt file', async () => {
    const txt = join(dir, 'docs.txt');
    writeFileSync(txt, documents.join('\n\n'));
    const plain = await quantize('from-txt', '--calib', txt);
    const gz = await quantize('from-jsonl-gz', '--calib', join(DATA, 'docs.jsonl.gz'));
    const parquet = await quantize('from-parquet', '--calib', join(DATA, 'docs-content.parquet'), '--text-field', 'content');
    expect(plain.layers).toHaveLength(4);
    // the block output errors are measured on the calibration windows: equal windows, equal errors
    const errors = (s: typeof plain): number[] => s.layers.flatMap((l) => Object.values(l.groups).map((g) => g.outputRelError));
    expect(errors(plain).every((e) => e > 0 && Number.isFinite(e))).toBe(true);
    expect(errors(gz)).toEqual(errors(plain));
    expect(errors(parquet)).toEqual(errors(plain));
    const report = JSON.parse(readFileSync(join(dir, 'from-parquet', 'quantize-report.json'), 'utf8'));
    expect(report.recipe).toMatchObject({ calib: join(DATA, 'docs-content.parquet'), 'text-field': 'content' });
  });

  it('a truncated .jsonl.gz is refused in one line and writes nothing', async () => {
    const file = join(DATA, 'bad-truncated.jsonl.gz');
    const r = await runCli('quantize', ...FAST, '-o', join(dir, 'never'), '--calib', file);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`bwq: ${file}: truncated gzip data (unexpected end of file)\n`);
    expect(existsSync(join(dir, 'never'))).toBe(false);
  });
});
