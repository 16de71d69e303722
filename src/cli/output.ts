/**
 * What commands print on stdout: results (one JSON object with --json, else human text), failures
 * as JSON with --json, and flag parsing shared by the commands.
 */
import { usageError } from '../errors.js';

/** Result printing: one JSON object on stdout with --json, else human text on stdout. */
export function printResult(json: boolean, value: unknown, human: () => string): void {
  if (json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  else process.stdout.write(`${human()}\n`);
}

/** Parse an integer flag value, rejecting junk like "12abc" or "-3" where not allowed. */
export function parseIntegerFlag(flag: string, value: string, min = 1): number {
  if (!/^-?\d+$/.test(value.trim())) throw usageError(`${flag} must be an integer, got "${value}"`);
  const n = Number.parseInt(value, 10);
  if (n < min) throw usageError(`${flag} must be at least ${min}, got ${n}`);
  return n;
}

/** Parse a decimal number flag ("0.7", "1e-2"), rejecting junk like "0.7x", "" or "inf". */
export function parseNumberFlag(flag: string, value: string): number {
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(value.trim())) throw usageError(`${flag} must be a number, got "${value}"`);
  return Number(value.trim());
}

/** A failure as the one JSON object `--json` prints: `{ "error": <message>, "file": <file or null> }` (one line of message). */
export function errorJson(message: string, file: string | undefined): string {
  return `${JSON.stringify({ error: message.replace(/\s*\n\s*/g, ' ').trim(), file: file ?? null }, null, 2)}\n`;
}

/** Whether the command-line arguments (after `node bwq`) ask for --json, before commander has parsed them. */
export function wantsJson(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).includes('--json');
}
