/**
 * Which OUT_DIR `bwq quantize` may write, and which existing one `--force` may replace.
 *
 * A bwq output directory holds `quantize-report.json` (a JSON object with a string `bwq_version`)
 * and otherwise only regular files named in BWQ_OUTPUT_FILES or simulated shards. `--force` replaces an
 * existing OUT_DIR only when it is such a directory (or empty); it refuses, in one line naming the directory and the
 * reason, an OUT_DIR that is a symbolic link, is or contains an input (the model directory, the
 * calibration file), is the working directory or one of its ancestors, or holds anything else.
 * Paths are compared after resolving symbolic links.
 */
import { lstat, readFile, readdir, realpath } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { BwqError } from '../errors.js';
import { outputError } from '../fs/errno.js';
import { isShardFileName } from '../safetensors/shards.js';

/** Files `bwq quantize` copies from the model directory into OUT_DIR when the model has them. */
export const COPIED_MODEL_FILES: readonly string[] = ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json'];

/** Every file `bwq quantize` writes into OUT_DIR, and nothing else (besides simulated shards, isBwqOutputFile). */
export const BWQ_OUTPUT_FILES: readonly string[] = [
  'model.safetensors', 'model.safetensors.index.json', 'model.packed.safetensors', 'config.json', 'quantize-report.json', ...COPIED_MODEL_FILES,
];

/** A name bwq quantize writes: BWQ_OUTPUT_FILES or a simulated shard (model-00001-of-00003.safetensors). */
export function isBwqOutputFile(name: string): boolean {
  return BWQ_OUTPUT_FILES.includes(name) || isShardFileName(name);
}

/** The file that marks a directory as written by bwq quantize. */
export const BWQ_REPORT_FILE = 'quantize-report.json';

export interface OutputDirInputs {
  /** paths bwq reads (model directory, calibration file); OUT_DIR must not be or contain any */
  inputs: readonly { path: string; what: string }[];
  /** the working directory (default process.cwd()) */
  cwd?: string;
}

/** The real path of `path`, or its resolved path when it does not exist (or cannot be resolved). */
async function real(path: string): Promise<string> {
  return realpath(path).catch(() => resolve(path));
}

/** true when `inner` is `outer` or lies below it. */
export function isWithin(inner: string, outer: string): boolean {
  const rel = relative(outer, inner);
  return rel === '' || (!isAbsolute(rel) && rel !== '..' && !rel.startsWith(`..${sep}`));
}

/**
 * Checks OUT_DIR before anything is written (and again just before an existing one is replaced).
 * Returns whether OUT_DIR exists; throws a BwqError naming OUT_DIR and the reason to refuse.
 */
export async function checkOutputDirectory(outDir: string, force: boolean, context: OutputDirInputs): Promise<boolean> {
  const out = await real(outDir);
  for (const input of context.inputs) {
    const path = await real(input.path);
    if (path === out) throw new BwqError(`is the ${input.what}; choose another -o`, { file: outDir, exitCode: 2 });
    if (isWithin(path, out)) throw new BwqError(`contains the ${input.what} ${input.path}; choose another -o`, { file: outDir, exitCode: 2 });
  }
  const info = await lstat(outDir).catch(() => undefined);
  if (info === undefined) return false;
  if (info.isSymbolicLink()) throw new BwqError('output path is a symbolic link; not replacing it (choose another -o)', { file: outDir });
  if (!info.isDirectory()) throw new BwqError('output path exists and is not a directory', { file: outDir });
  if (!force) throw new BwqError('output directory already exists (pass --force to replace a previous bwq output)', { file: outDir });
  const cwd = await real(context.cwd ?? process.cwd());
  if (isWithin(cwd, out)) {
    throw new BwqError(`is ${cwd === out ? 'the working directory' : 'an ancestor of the working directory'}; not replacing it (choose another -o)`, { file: outDir, exitCode: 2 });
  }
  await checkWrittenByBwq(outDir);
  return true;
}

/** Refuses a non-empty directory that is not exactly a bwq output (see the file comment). */
export async function checkWrittenByBwq(dir: string): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (error) {
    throw outputError(error, dir);
  }
  if (entries.length === 0) return;
  const foreign = entries.filter((e) => !e.isFile() || !isBwqOutputFile(e.name)).map((e) => e.name).sort();
  if (foreign.length > 0) {
    const shown = foreign.slice(0, 3).join(', ') + (foreign.length > 3 ? ` and ${foreign.length - 3} more` : '');
    throw new BwqError(`holds files bwq did not write (${shown}); not replacing it (choose another -o)`, { file: dir });
  }
  if (!entries.some((e) => e.name === BWQ_REPORT_FILE)) {
    throw new BwqError(`has no ${BWQ_REPORT_FILE}, so bwq did not write it; not replacing it (choose another -o)`, { file: dir });
  }
  let report: unknown;
  try {
    report = JSON.parse(await readFile(resolve(dir, BWQ_REPORT_FILE), 'utf8'));
  } catch {
    report = undefined;
  }
  if (report === null || typeof report !== 'object' || typeof (report as Record<string, unknown>)['bwq_version'] !== 'string') {
    throw new BwqError(`${BWQ_REPORT_FILE} is not a bwq report, so bwq did not write it; not replacing it (choose another -o)`, { file: dir });
  }
}
