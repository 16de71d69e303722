import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

// Runs the compiled module (dist/ is built by `npm ci` through the prepare script).
const atomicModule = pathToFileURL(resolve(__dirname, '../../dist/fs/atomic.js')).href;

describe('atomic outputs under Ctrl-C', () => {
  it('removes the partial output and exits with status 130', () => {
    expect(existsSync(new URL(atomicModule))).toBe(true);
    const dir = mkdtempSync(join(tmpdir(), 'bwq-sigint-'));
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
});
