/**
 * Multiple-choice task files for `bwq eval --tasks FILE.jsonl` (format in docs/EVAL.md): one question per
 * line, a JSON object in one of two forms, as lm-eval-harness builds its loglikelihood requests:
 *
 *   choices:  {"task": T, "context": C, "choices": [A0, A1, …], "gold": g}
 *             choice i is scored as the continuation `target_delimiter + Ai` of C;
 *   partial:  {"task": T, "contexts": [C0, C1, …], "continuation": X, "gold": g}
 *             (Winogrande's partial evaluation) choice i is `target_delimiter + X` scored after Ci.
 *
 * `target_delimiter` is optional (default " ", lm-eval's). Other fields are ignored; blank lines are skipped.
 * Anything else is refused with one line naming the file and the line.
 */
import { readFile } from 'node:fs/promises';
import { BwqError } from '../errors.js';
import { firstInvalidByte } from '../data/text-decode.js';
import { pythonRstrip } from './python-whitespace.js';

/** lm-eval's default `target_delimiter`, put between a context and the scored text. */
export const DEFAULT_TARGET_DELIMITER = ' ';

export interface TaskQuestion {
  task: string;
  /** 1-based line of the file */
  line: number;
  /** per choice, the text that comes first and the text whose log-likelihood is scored */
  pairs: { context: string; continuation: string }[];
  /**
   * Per choice, the text whose length in characters (Unicode code points) normalizes acc_norm, as lm-eval's
   * `len(choice)`: the choice without the delimiter, or in the partial form the context of that choice.
   */
  choiceTexts: string[];
  /** index of the right choice */
  gold: number;
}

/** Reads and checks a task file; BwqError `FILE: line N: problem` on the first bad line. */
export async function readTaskFile(file: string): Promise<TaskQuestion[]> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new BwqError('task file not found', { file, cause: error });
    if (code === 'EISDIR') throw new BwqError('is a directory, expected a .jsonl task file', { file, cause: error });
    throw new BwqError(`cannot read: ${(error as Error).message}`, { file, cause: error });
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new BwqError(`not UTF-8 text (invalid UTF-8 at byte ${firstInvalidByte(bytes)}); expected a .jsonl task file`, { file });
  }
  return parseTaskLines(text, file);
}

/** The questions of a task file's text (`file` names it in errors). */
export function parseTaskLines(text: string, file: string): TaskQuestion[] {
  const questions: TaskQuestion[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === '') continue;
    const fail = (problem: string): BwqError => new BwqError(`line ${i + 1}: ${problem}`, { file });
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (error) {
      throw fail(`invalid JSON (${(error as Error).message.split('\n')[0]})`);
    }
    questions.push(parseQuestion(value, i + 1, fail));
  }
  if (questions.length === 0) throw new BwqError('no questions (expected one JSON object per line, docs/EVAL.md)', { file });
  return questions;
}

function parseQuestion(value: unknown, line: number, fail: (problem: string) => BwqError): TaskQuestion {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw fail('expected a JSON object');
  const q = value as Record<string, unknown>;
  const task = q['task'];
  if (typeof task !== 'string' || task === '') throw fail('"task" must be a non-empty string');
  const delimiter = q['target_delimiter'] ?? DEFAULT_TARGET_DELIMITER;
  if (typeof delimiter !== 'string') throw fail('"target_delimiter" must be a string');

  const hasContext = 'context' in q;
  const hasContexts = 'contexts' in q;
  if (hasContext === hasContexts) throw fail('needs exactly one of "context" (with "choices") or "contexts" (with "continuation")');
  let pairs: TaskQuestion['pairs'];
  let choiceTexts: string[];
  if (hasContext) {
    if ('continuation' in q) throw fail('"continuation" belongs with "contexts", not with "context"');
    const context = checkContext(q['context'], '"context"', fail);
    choiceTexts = stringList(q['choices'], '"choices"', fail);
    pairs = choiceTexts.map((choice) => ({ context, continuation: delimiter + choice }));
  } else {
    if ('choices' in q) throw fail('"choices" belongs with "context", not with "contexts"');
    choiceTexts = stringList(q['contexts'], '"contexts"', fail);
    choiceTexts.forEach((c, k) => checkContext(c, `"contexts"[${k}]`, fail));
    const continuation = q['continuation'];
    if (typeof continuation !== 'string' || continuation === '') throw fail('"continuation" must be a non-empty string');
    pairs = choiceTexts.map((context) => ({ context, continuation: delimiter + continuation }));
  }
  const gold = q['gold'];
  if (typeof gold !== 'number' || !Number.isInteger(gold)) throw fail(`"gold" must be an integer index, got ${JSON.stringify(gold)}`);
  if (gold < 0 || gold >= pairs.length) throw fail(`"gold" ${gold} is out of range for ${pairs.length} choices (0 … ${pairs.length - 1})`);
  return { task, line, pairs, choiceTexts, gold };
}

/** A context must hold something besides whitespace (lm-eval moves trailing whitespace to the continuation). */
function checkContext(value: unknown, name: string, fail: (problem: string) => BwqError): string {
  if (typeof value !== 'string') throw fail(`${name} must be a string`);
  if (pythonRstrip(value) === '') throw fail(`${name} is empty`);
  return value;
}

function stringList(value: unknown, name: string, fail: (problem: string) => BwqError): string[] {
  if (value === undefined) throw fail(`${name} is missing`);
  if (!Array.isArray(value)) throw fail(`${name} must be an array of strings`);
  if (value.length < 2) throw fail(`${name} has ${value.length} entries, a question needs at least 2`);
  value.forEach((v, k) => {
    if (typeof v !== 'string') throw fail(`${name}[${k}] must be a string`);
    if (v === '') throw fail(`${name}[${k}] is empty`);
  });
  return value as string[];
}
