/**
 * The install skips onnxruntime-node's CUDA download without an npm config key npm does not know (npm 11 warns
 * "Unknown project config" for .npmrc keys such as `onnxruntime-node-install` and will stop passing them on):
 *  - a fresh `npm ci` of this package.json and package-lock.json (and .npmrc, if the repository has one), run
 *    for real by npm in a clean directory (--dry-run: npm parses every config and resolves the tree, installs
 *    nothing), prints no "Unknown … config" warning;
 *  - every place that installs bwq (.ci/run, the Dockerfiles, the composite action) sets
 *    ONNXRUNTIME_NODE_INSTALL to a value that onnxruntime-node's own install script reads as "skip".
 */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { tempDirs } from '../helpers/temp-dirs.js';

const run = promisify(execFile);
const temp = tempDirs();

/** The environment of a fresh shell: no npm_* variables that an enclosing `npm test` or npx sets. */
function freshEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k)) env[k] = v;
  return { ...env, ...extra };
}

/** Where each install path sets the variable, and how its syntax spells it. */
const SETTERS: [string, RegExp][] = [
  ['.ci/run', /^export ONNXRUNTIME_NODE_INSTALL=(\S+)$/m],
  ['README.md', /^ONNXRUNTIME_NODE_INSTALL=(\S+) npm ci && npm test$/m],
  ['Dockerfile', /^ENV ONNXRUNTIME_NODE_INSTALL=(\S+)$/m],
  ['Dockerfile.cuda', /^ENV ONNXRUNTIME_NODE_INSTALL=(\S+)$/m],
  ['action.yml', /^\s+ONNXRUNTIME_NODE_INSTALL: (\S+)$/m],
];

describe('install configuration', () => {
  it('a fresh npm ci of the project parses its config without an unknown-key warning', async () => {
    const dir = temp('bwq-npm-');
    for (const f of ['package.json', 'package-lock.json', '.npmrc']) if (existsSync(f)) copyFileSync(f, join(dir, f));
    const { stderr } = await run('npm', ['ci', '--dry-run', '--ignore-scripts', '--offline', '--no-audit', '--no-fund'],
      { cwd: dir, env: freshEnv({ ONNXRUNTIME_NODE_INSTALL: 'skip' }) });
    expect(stderr).not.toMatch(/Unknown \w+ config/);
    expect(stderr).not.toMatch(/will stop working/);
  }, 120_000);

  it('every install path sets ONNXRUNTIME_NODE_INSTALL, which onnxruntime-node reads as skip', async () => {
    const utils = resolve('node_modules/onnxruntime-node/script/install-utils.js');
    for (const [file, pattern] of SETTERS) {
      const value = pattern.exec(readFileSync(file, 'utf8'))?.[1];
      expect(value, `${file} sets ONNXRUNTIME_NODE_INSTALL`).toBeDefined();
      // the package's own parser (its install script exits at once when this is false)
      const { stdout } = await run(process.execPath, ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(utils)}).parseInstallFlag()))`],
        { env: freshEnv({ ONNXRUNTIME_NODE_INSTALL: value! }) });
      expect(JSON.parse(stdout), file).toBe(false);
    }
    // and the variable is what the parser reads: without it the flag is unset (the script would download);
    // .ci/run exports it, so it is removed from the environment here
    const unset = freshEnv();
    delete unset['ONNXRUNTIME_NODE_INSTALL'];
    const { stdout } = await run(process.execPath, ['-e', `process.stdout.write(String(require(${JSON.stringify(utils)}).parseInstallFlag()))`],
      { env: unset });
    expect(stdout).toBe('undefined');
  });
});
