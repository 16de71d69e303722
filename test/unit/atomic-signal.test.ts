import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

// Runs the compiled module (dist/ is built by `npm ci` through the prepare script).
const atomicModule = pathToFileURL(resolve(__dirname, '../../dist/fs/atomic.js')).href;

describe('atomic outputs under Ctrl-C', () => {
  it('removes the partial output and exits with status 130', () => {
    expect(existsSync(new URL(atomicModule))).toBe(true);
    const dir = tempDir('bwq-sigint-');
    const destination = join(dir, 'out');
    const script = `
      import { writeAtomically } from ${JSON.stringify(atomicModule)};
      import { mkdirSync, writeFileSync } from 'node:fs';
      await writeAtomically(${JSON.stringify(destination)}, async (temp) => {
        mkdirSync(temp);
        writeFileSync(temp + '/model.safetensors', 'partial');
        process.kill(process.pid, 'SIGINT');
        await new Promise((r) => setTimeout(r, 5000));
      }, { replaceDirectory: true });
    `;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(result.signal ?? result.status).toSatisfy((s: unknown) => s === 'SIGINT' || s === 130);
    expect(result.stderr.trim()).toBe('bwq: interrupted (SIGINT); partial output removed');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('while replacing an existing output (--force): the old output stays intact', () => {
    const dir = tempDir('bwq-sigint-');
    const destination = join(dir, 'out');
    mkdirSync(destination);
    writeFileSync(join(destination, 'quantize-report.json'), '{"bwq_version":"0.1.0"}');
    writeFileSync(join(destination, 'model.safetensors'), 'old');
    const script = `
      import { writeAtomically } from ${JSON.stringify(atomicModule)};
      import { writeFileSync } from 'node:fs';
      await writeAtomically(${JSON.stringify(destination)}, async (temp) => {
        writeFileSync(temp + '/model.safetensors', 'partial');
        process.kill(process.pid, 'SIGINT');
        await new Promise((r) => setTimeout(r, 5000));
      }, { replaceDirectory: true, directory: true });
    `;
    const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(result.signal ?? result.status).toSatisfy((s: unknown) => s === 'SIGINT' || s === 130);
    expect(readdirSync(dir)).toEqual(['out']);
    expect(readdirSync(destination).sort()).toEqual(['model.safetensors', 'quantize-report.json']);
    expect(readFileSync(join(destination, 'model.safetensors'), 'utf8')).toBe('old');
  });
});
