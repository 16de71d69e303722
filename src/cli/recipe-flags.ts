/**
 * `bwq quantize --recipe FILE`: a recipe's values become the command's flag values, as if they had been typed,
 * except for the flags given on the command line, which win. The keys a recipe may hold are the command's own
 * long flags (so a flag added to the command is a recipe key at once) and `model`; any other key is refused in
 * one line naming the file and the key. `--recipe`, `--json` and `--help` are not recipe keys; `force` and
 * `resume` are, but a report does not record them (they steer one invocation, not the result).
 */
import type { Command, Option } from 'commander';
import { BwqError } from '../errors.js';
import { inputDigests } from '../pipeline/checkpoint.js';
import type { QuantizeOptions } from '../pipeline/quantize.js';
import { checkRecordedInputs, readRecipeFile, type Recipe, type RecipeFile } from '../pipeline/recipe-file.js';

/** Flags a recipe cannot set. */
const NOT_RECIPE_KEYS = new Set(['recipe', 'json', 'help', 'version']);
/** Recipe keys a report does not record. */
const NOT_RECORDED = new Set(['force', 'resume']);
/** The key of the MODEL_DIR argument. */
const MODEL_KEY = 'model';

/** The recipe key of a flag: its long name, `X` for `--no-X`; undefined for flags recipes do not set. */
function recipeKey(option: Option): string | undefined {
  if (option.long === undefined) return undefined;
  const name = option.negate ? option.long.replace(/^--no-/, '') : option.long.replace(/^--/, '');
  return NOT_RECIPE_KEYS.has(name) ? undefined : name;
}

function optionsByKey(command: Command): Map<string, Option> {
  const byKey = new Map<string, Option>();
  for (const option of command.options) {
    const key = recipeKey(option);
    if (key !== undefined && !byKey.has(key)) byKey.set(key, option);
  }
  return byKey;
}

/** Sets the command's flag values from the recipe, leaving those given on the command line; returns MODEL_DIR. */
export function applyRecipe(command: Command, file: RecipeFile, modelArg: string | undefined): string | undefined {
  const byKey = optionsByKey(command);
  let model = modelArg;
  for (const [key, value] of Object.entries(file.recipe)) {
    if (key === MODEL_KEY) {
      if (typeof value !== 'string') throw new BwqError(`recipe key "model" must be a path (got ${JSON.stringify(value)})`, { file: file.path, exitCode: 2 });
      model ??= value;
      continue;
    }
    const option = byKey.get(key);
    if (option === undefined) throw new BwqError(`unknown recipe key "${key}" (bwq quantize has no --${key})`, { file: file.path, exitCode: 2 });
    const attribute = option.attributeName();
    const source = command.getOptionValueSource(attribute);
    if (source === 'cli' || source === 'env') continue; // the command line wins
    if (!option.required && !option.optional) { // a switch: --force, or --no-X (key X)
      if (typeof value !== 'boolean') throw new BwqError(`recipe key "${key}" must be true or false (got ${JSON.stringify(value)})`, { file: file.path, exitCode: 2 });
      command.setOptionValueWithSource(attribute, value, 'config');
    } else {
      if (typeof value === 'boolean') throw new BwqError(`recipe key "${key}" takes a value, not ${value}`, { file: file.path, exitCode: 2 });
      const text = String(value);
      command.setOptionValueWithSource(attribute, option.parseArg === undefined ? text : option.parseArg(text, undefined), 'config');
    }
  }
  return model;
}

/** The command's flag values as a recipe (what the run was asked for; the report adds what it resolved). */
export function recipeFromFlags(command: Command, model: string | undefined): Recipe {
  const recipe: Recipe = {};
  if (model !== undefined) recipe[MODEL_KEY] = model;
  for (const [key, option] of optionsByKey(command)) {
    if (NOT_RECORDED.has(key)) continue;
    const value: unknown = command.getOptionValue(option.attributeName());
    if (typeof value === 'string' || typeof value === 'boolean' || typeof value === 'number') recipe[key] = value;
  }
  return recipe;
}

/**
 * The quantize options of an invocation: `--recipe` applied under the command line's flags, parsed by `parse`,
 * with the flags recorded for the report; a quantize report used as the recipe must name the same inputs
 * (model files, calibration text) as the ones this run reads, unless the command line chose others.
 */
export async function quantizeOptionsWithRecipe<Raw extends { recipe?: string }>(
  command: Command, modelArg: string | undefined, parse: (model: string | undefined, raw: Raw) => QuantizeOptions,
): Promise<{ options: QuantizeOptions; raw: Raw }> {
  const recipePath = command.opts<Raw>().recipe;
  const file = recipePath === undefined ? undefined : await readRecipeFile(recipePath);
  const model = file === undefined ? modelArg : applyRecipe(command, file, modelArg);
  const raw = command.opts<Raw>();
  const options = parse(model, raw);
  options.recipe = recipeFromFlags(command, model);
  if (file?.inputs !== undefined) {
    const check = { model: modelArg === undefined, calib: command.getOptionValueSource('calib') !== 'cli' };
    // inputs that cannot be read are left to the run, which names them in its own errors
    const actual = check.model || check.calib ? await inputDigests(options.modelDir, options.calibFile).catch(() => undefined) : undefined;
    if (actual !== undefined) checkRecordedInputs(file, actual, check);
  }
  return { options, raw };
}
