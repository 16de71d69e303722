/**
 * Quantize recipes: every option of a `bwq quantize` run in one file (docs/CI.md).
 *
 * A recipe is a JSON (.json) or YAML (.yaml, .yml) mapping from the long flag names of `bwq quantize`
 * (`method`, `a-bits`, `nsamples`, `stat-tokens`, …; a `--no-X` flag is the key `X: false`) plus `model`
 * (the MODEL_DIR argument) to scalars: strings, numbers, booleans. A quantize report
 * (OUT_DIR/quantize-report.json) is a recipe too: its `recipe` object, which holds every resolved option of the
 * run that wrote it, with the sha256 of the inputs that run read (`inputs`). Which keys exist is decided by the
 * command's flags (src/cli/recipe-flags.ts); this module reads files and builds the recipe a report records.
 */
import { readFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { BwqError } from '../errors.js';
import type { InputDigests } from './checkpoint.js';
import type { QuantizeOptions } from './quantize.js';

export type RecipeValue = string | number | boolean;
/** Option values by long flag name (`a-bits`, `nsamples`, …) and `model`. */
export type Recipe = Record<string, RecipeValue>;

export interface RecipeFile {
  path: string;
  recipe: Recipe;
  /** the file is a quantize report: the sha256 of the inputs of the run that wrote it */
  inputs?: InputDigests;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseText(path: string, text: string): unknown {
  const ext = extname(path).toLowerCase();
  if (ext === '.json') {
    try {
      return JSON.parse(text) as unknown;
    } catch (error) {
      throw new BwqError(`recipe is not valid JSON: ${(error as Error).message}`, { file: path, exitCode: 2 });
    }
  }
  if (ext === '.yaml' || ext === '.yml') {
    try {
      return parseYaml(text, { uniqueKeys: true }) as unknown;
    } catch (error) {
      throw new BwqError(`recipe is not valid YAML: ${(error as Error).message.split('\n')[0]!.replace(/:\s*$/, '')}`, { file: path, exitCode: 2 });
    }
  }
  throw new BwqError(`recipe must be a .json, .yaml or .yml file (got "${ext || 'no extension'}")`, { file: path, exitCode: 2 });
}

function digestsOf(value: unknown): InputDigests | undefined {
  if (!isObject(value) || typeof value['calib'] !== 'string' || !isObject(value['model'])) return undefined;
  const model: Record<string, string> = {};
  for (const [name, digest] of Object.entries(value['model'])) {
    if (typeof digest !== 'string') return undefined;
    model[name] = digest;
  }
  return { calib: value['calib'], model };
}

/** Reads and checks a recipe file (or a quantize report); the values are checked against the flags later. */
export async function readRecipeFile(path: string): Promise<RecipeFile> {
  const text = await readFile(path, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new BwqError(`cannot read the recipe: ${error.code === 'ENOENT' ? 'no such file' : error.message}`, { file: path, exitCode: 2 });
  });
  const parsed = parseText(path, text);
  if (!isObject(parsed)) throw new BwqError('recipe must be a mapping of option names to values', { file: path, exitCode: 2 });
  // a quantize report: its recipe, and the inputs it recorded
  const isReport = typeof parsed['bwq_version'] === 'string' && 'recipe' in parsed;
  const body = isReport ? parsed['recipe'] : parsed;
  if (!isObject(body)) throw new BwqError('the report\'s "recipe" is not a mapping of option names to values', { file: path, exitCode: 2 });
  const recipe: Recipe = {};
  for (const [key, value] of Object.entries(body)) {
    if (typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value))) recipe[key] = value;
    else throw new BwqError(`recipe key "${key}" must be a string, a number or a boolean (got ${JSON.stringify(value) ?? String(value)})`, { file: path, exitCode: 2 });
  }
  const inputs = isReport ? digestsOf(parsed['inputs']) : undefined;
  return inputs === undefined ? { path, recipe } : { path, recipe, inputs };
}

/** rows of each linear-input tap kept for the statistics when --stat-tokens is not given (src/pipeline/quantize.ts) */
const DEFAULT_STAT_TOKENS = 512;

/**
 * The recipe a quantize report records: the flags as the run got them (`options.recipe`), with every option the
 * run resolved written out (absolute paths, the calibration size and device it used, the defaults it took), so
 * that `bwq quantize --recipe OUT_DIR/quantize-report.json` repeats the run.
 */
export function resolvedRecipe(options: QuantizeOptions, seqlen: number, device: string): Recipe {
  const recipe: Recipe = {
    model: options.modelDir,
    output: options.outDir,
    method: options.method,
    'w-bits': 1,
    'a-bits': options.aBits,
    calib: options.calibFile,
    nsamples: options.nsamples,
    seqlen,
    rank: options.rank,
    seed: options.seed,
    'stat-tokens': Math.min(options.statTokens ?? DEFAULT_STAT_TOKENS, options.nsamples * seqlen),
    sequential: options.sequential ?? 'block',
    device: device.startsWith('cuda') ? 'cuda' : 'cpu',
  };
  if (options.threads !== undefined) recipe['threads'] = options.threads;
  // flags the pipeline passes on as given (and any this list does not resolve)
  for (const [key, value] of Object.entries(options.recipe ?? {})) if (!(key in recipe)) recipe[key] = value;
  return recipe;
}

/**
 * A report used as a recipe names the inputs its run read: refuse, in one line naming the recipe, a model file or
 * calibration text whose sha256 differs (`check.model` / `check.calib` false: that input was overridden by a flag).
 */
export function checkRecordedInputs(file: RecipeFile, actual: InputDigests, check: { model: boolean; calib: boolean }): void {
  const recorded = file.inputs;
  if (recorded === undefined) return;
  if (check.calib && recorded.calib !== actual.calib) {
    throw new BwqError(`the calibration text has sha256 ${actual.calib.slice(0, 12)}…, the recorded run read ${recorded.calib.slice(0, 12)}… (pass --calib to use another text)`,
      { file: file.path, exitCode: 2 });
  }
  if (!check.model) return;
  const names = [...new Set([...Object.keys(recorded.model), ...Object.keys(actual.model)])].sort();
  for (const name of names) {
    const was = recorded.model[name];
    const now = actual.model[name];
    if (was === now) continue;
    const problem = was === undefined ? 'is not among the files the recorded run read'
      : now === undefined ? 'is missing from the model directory'
        : `has sha256 ${now.slice(0, 12)}…, the recorded run read ${was.slice(0, 12)}…`;
    throw new BwqError(`model file ${name} ${problem} (pass MODEL_DIR to use another model)`, { file: file.path, exitCode: 2 });
  }
}
