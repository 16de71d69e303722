/**
 * bwq command-line entry. Each command lives in src/cli/commands/<name>.ts and
 * exports `register(program)`. Errors become one line on stderr and a non-zero exit; with --json
 * also one JSON object `{ "error": <message>, "file": <file or null> }` on stdout (src/cli/output.ts).
 */
import { Command, CommanderError } from 'commander';
import { BwqError } from '../errors.js';
import { registerQuantize } from './commands/quantize.js';
import { registerEval } from './commands/eval.js';
import { registerInspect } from './commands/inspect.js';
import { registerBench } from './commands/bench.js';
import { registerGenerate } from './commands/generate.js';
import { VERSION } from '../version.js';
import { errorJson, wantsJson } from './output.js';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('bwq')
    .description(
      'Post-training quantization of transformer LMs to 1-bit weights with ternary (BWTA) or low-bit (BWLA) activations',
    )
    .version(VERSION)
    .configureOutput({
      // Commander's own errors (unknown flag, missing argument) as one line, like ours.
      outputError: (text, write) => write(`bwq: ${text.replace(/^error:\s*/, '').replace(/\s*\n\s*/g, ' ').trim()} (see --help)\n`),
    })
    .exitOverride();
  registerQuantize(program);
  registerEval(program);
  registerInspect(program);
  registerBench(program);
  registerGenerate(program);
  return program;
}

/** Runs the CLI and returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  // --json as the command parsed it; before parsing succeeds (usage errors), as argv spells it
  let json: boolean | undefined;
  program.hook('preAction', (_program, action) => {
    json = action.opts()['json'] === true;
  });
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    return reportError(error, json ?? wantsJson(argv.slice(2)));
  }
}

/** Prints a failure (one stderr line; with `json` also one JSON object on stdout) and returns the exit code. */
export function reportError(error: unknown, json = false): number {
  if (error instanceof CommanderError) {
    // --help and --version exit through here with code 0; commander already printed.
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.exitCode === 0) return 0;
    // commander printed the stderr line (configureOutput above)
    if (json) process.stdout.write(errorJson(`${error.message.replace(/^error:\s*/, '')} (see --help)`, undefined));
    return 2;
  }
  if (error instanceof BwqError) {
    process.stderr.write(`bwq: ${error.oneLine()}\n`);
    if (process.env['BWQ_DEBUG']) process.stderr.write(`${error.stack ?? ''}\n`);
    // a failed quality gate already printed the result (with the gates) as the one JSON object
    if (json && !error.resultPrinted) process.stdout.write(errorJson(error.message, error.file));
    return error.exitCode;
  }
  const message = `internal error: ${error instanceof Error ? error.message : String(error)}`;
  process.stderr.write(`bwq: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  if (process.env['BWQ_DEBUG'] && error instanceof Error) process.stderr.write(`${error.stack ?? ''}\n`);
  if (json) process.stdout.write(errorJson(message, undefined));
  return 1;
}
