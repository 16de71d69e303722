/**
 * `bwq quantize --recipe FILE` and byte-reproducible outputs (issue #18, docs/CI.md):
 *  - the same recipe run with --threads 1 (YAML recipe) and --threads 2 (JSON recipe, the flag overriding the
 *    recipe's threads) writes byte-identical files; the reports differ only in the fields that describe the run
 *    rather than its result (seconds, layers[].seconds, device, recipe.output, recipe.threads);
 *  - the report records every option the run was given or defaulted, the bwq version and the sha256 of the inputs;
 *  - `--recipe OUT_DIR/quantize-report.json` repeats the run byte for byte;
 *  - unknown keys, bad files and a report whose inputs changed are refused in one line before any work.
 */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { buildProgram } from '../../src/cli/main.js';
import { VERSION } from '../../src/version.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const run = promisify(execFile);
const root = tempDirs()('bwq-recipe-');
const BIN = resolve('bin/bwq.js');

async function bwq(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [BIN, ...args], { env: { ...process.env, CI: 'true' }, maxBuffer: 1 << 24 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

type Report = Record<string, unknown> & { memory?: Record<string, unknown>; recipe: Record<string, unknown>; layers: Record<string, unknown>[]; inputs: { calib: string; model: Record<string, string> } };

function readReport(dir: string): Report {
  return JSON.parse(readFileSync(join(dir, 'quantize-report.json'), 'utf8')) as Report;
}

/** The report without the fields that describe the run rather than its result. */
function resultPart(report: Report): unknown {
  const { seconds: _s, device: _d, memory, ...rest } = report;
  const { output: _o, threads: _t, ...recipe } = report.recipe;
  // the measured peak RSS is the run's, not its result; the bound and its parts are
  const { peak_rss_bytes: _p, ...bound } = memory ?? {};
  return { ...rest, memory: bound, recipe, layers: report.layers.map(({ seconds: _ls, ...layer }) => layer) };
}

/** Every output file but the report, byte for byte (as sha256), and the report's result part. */
function expectSameResult(a: string, b: string): void {
  const files = readdirSync(a).sort();
  expect(readdirSync(b).sort()).toEqual(files);
  for (const f of files) if (f !== 'quantize-report.json') expect(sha256(join(b, f)), f).toBe(sha256(join(a, f)));
  expect(resultPart(readReport(b))).toEqual(resultPart(readReport(a)));
}

// RTN: the pipeline's sampling, statistics, searches and forwards without the (slow) OKT/PSP transforms, so
// three runs stay short; BWLA's byte-identity across a resume is test/quant/resume.test.ts's
const RECIPE_YAML = `# a small run of the bundled model
model: models/sotu-llama
method: rtn
a-bits: 6
nsamples: 4
seqlen: 64
stat-tokens: 128
seed: 0
device: cpu
threads: 1
`;

describe('quantize --recipe', () => {
  it('same recipe and seed: byte-identical outputs with 1 and 2 threads, and from the report as recipe', async () => {
    const yamlPath = join(root, 'run.yaml');
    writeFileSync(yamlPath, RECIPE_YAML);
    const jsonPath = join(root, 'run.json');
    writeFileSync(jsonPath, JSON.stringify({ model: 'models/sotu-llama', method: 'rtn', 'a-bits': 6, nsamples: 4, seqlen: 64,
      'stat-tokens': 128, seed: 0, device: 'cpu', threads: 1, output: join(root, 'unused') }));

    const one = join(root, 'threads-1');
    const two = join(root, 'threads-2');
    const a = await bwq('quantize', '--recipe', yamlPath, '-o', one);
    expect(a.code, a.stderr).toBe(0);
    const b = await bwq('quantize', '--recipe', jsonPath, '-o', two, '--threads', '2');
    expect(b.code, b.stderr).toBe(0);
    expect(existsSync(join(root, 'unused'))).toBe(false); // -o won over the recipe's output
    expect(readReport(two).recipe['threads']).toBe(2); // --threads won over the recipe's threads
    expect(readReport(two).device).toMatch(/2 threads/);
    expectSameResult(one, two);

    // the report as the recipe: the same run again, byte for byte
    const again = join(root, 'again');
    const c = await bwq('quantize', '--recipe', join(one, 'quantize-report.json'), '-o', again);
    expect(c.code, c.stderr).toBe(0);
    expectSameResult(one, again);
    expect(readReport(again).recipe['threads']).toBe(1);

    // what the report records: every option, the version, the inputs' sha256
    const report = readReport(one);
    expect(report['bwq_version']).toBe(VERSION);
    expect(VERSION).toBe(JSON.parse(readFileSync('package.json', 'utf8')).version);
    expect(report.recipe).toMatchObject({
      model: resolve('models/sotu-llama'), output: one, method: 'rtn', 'w-bits': 1, 'a-bits': 6,
      calib: resolve('calibration/sotu-calib.txt'), nsamples: 4, seqlen: 64, rank: 8, seed: 0, 'stat-tokens': 128,
      sequential: 'block', device: 'cpu', threads: 1,
    });
    // every option the run was given is recorded (flags not given take the recorded version's defaults)
    for (const k of Object.keys(parse(RECIPE_YAML) as Record<string, unknown>)) expect(report.recipe, `recipe records ${k}`).toHaveProperty([k]);
    // and every flag with a value in the run (a default included), read off the command itself
    const quantize = buildProgram().commands.find((cmd) => cmd.name() === 'quantize')!;
    for (const o of quantize.options) {
      const key = o.negate ? o.long!.replace(/^--no-/, '') : o.long!.replace(/^--/, '');
      if (o.defaultValue !== undefined && !['recipe', 'json', 'force', 'resume'].includes(key)) {
        expect(report.recipe, `recipe records --${key} (default ${String(o.defaultValue)})`).toHaveProperty([key]);
      }
    }
    expect(report.inputs.calib).toBe(sha256('calibration/sotu-calib.txt'));
    expect(report.inputs.model).toEqual({
      'config.json': sha256('models/sotu-llama/config.json'),
      'model.safetensors': sha256('models/sotu-llama/model.safetensors'),
      'tokenizer.json': sha256('models/sotu-llama/tokenizer.json'),
      'tokenizer_config.json': sha256('models/sotu-llama/tokenizer_config.json'),
    });
  }, 480_000);

  it('refuses unknown keys, bad values, bad files and changed inputs in one line, writing nothing', async () => {
    const cases: [string, string, RegExp][] = [
      ['typo.yaml', 'method: rtn\nnsampels: 4\n', /typo\.yaml: unknown recipe key "nsampels" \(bwq quantize has no --nsampels\)$/],
      ['list.json', '{"method": "rtn", "seed": [1, 2]}', /list\.json: recipe key "seed" must be a string, a number or a boolean \(got \[1,2\]\)$/],
      ['flag.json', '{"method": "rtn", "force": "yes"}', /flag\.json: recipe key "force" must be true or false \(got "yes"\)$/],
      ['broken.yaml', 'method: [rtn\n', /broken\.yaml: recipe is not valid YAML: /],
      ['broken.json', '{"method": ', /broken\.json: recipe is not valid JSON: /],
      ['list.yaml', '- method\n- rtn\n', /list\.yaml: recipe must be a mapping of option names to values$/],
      ['recipe.toml', 'method = "rtn"\n', /recipe\.toml: recipe must be a \.json, \.yaml or \.yml file \(got "\.toml"\)$/],
    ];
    for (const [name, text, message] of cases) {
      const path = join(root, name);
      writeFileSync(path, text);
      const out = join(root, `out-${name}`);
      const r = await bwq('quantize', '--recipe', path, '-o', out);
      expect(r.code, name).toBe(2);
      expect(r.stderr.trim().split('\n'), name).toHaveLength(1);
      expect(r.stderr.trim(), name).toMatch(message);
      expect(existsSync(out)).toBe(false);
    }
    const missing = await bwq('quantize', '--recipe', join(root, 'none.yaml'), '-o', join(root, 'x'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/none\.yaml: cannot read the recipe: no such file/);

    // a report whose calibration text or model file is not the one this run would read
    const report = {
      bwq_version: VERSION,
      recipe: { model: resolve('models/sotu-llama'), method: 'rtn', nsamples: 2, seqlen: 64, device: 'cpu' },
      inputs: { calib: sha256('calibration/sotu-calib.txt'), model: { 'config.json': sha256('models/sotu-llama/config.json'), 'model.safetensors': '0'.repeat(64) } },
    };
    const reportPath = join(root, 'quantize-report.json');
    writeFileSync(reportPath, JSON.stringify(report));
    const changed = await bwq('quantize', '--recipe', reportPath, '-o', join(root, 'changed'));
    expect(changed.code).toBe(2);
    expect(changed.stderr.trim()).toMatch(/quantize-report\.json: model file model\.safetensors has sha256 [0-9a-f]{12}…, the recorded run read 000000000000… \(pass MODEL_DIR to use another model\)$/);
    writeFileSync(reportPath, JSON.stringify({ ...report, inputs: { ...report.inputs, calib: 'f'.repeat(64) } }));
    const calib = await bwq('quantize', '--recipe', reportPath, '-o', join(root, 'changed'));
    expect(calib.code).toBe(2);
    expect(calib.stderr.trim()).toMatch(/quantize-report\.json: the calibration text has sha256 [0-9a-f]{12}…, the recorded run read ffffffffffff…/);
    expect(existsSync(join(root, 'changed'))).toBe(false);
  }, 120_000);
});
