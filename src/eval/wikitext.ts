/**
 * WikiText-2 (raw) test split as the GPTQ / QuaRot / BWLA perplexity protocol reads it: the Hugging Face rows
 * (one per line of wiki.test.raw, newline kept; a blank line " \n" is the empty row) joined with "\n\n"
 * (data/wikitext-2-raw/README.md). `--dataset wikitext2` names the bundled copy.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BwqError } from '../errors.js';
import { PACKAGE_ROOT } from '../package-paths.js';

export const WIKITEXT2_NAME = 'wikitext2';
export const WIKITEXT2_FILE = join(PACKAGE_ROOT, 'data', 'wikitext-2-raw', 'wiki.test.raw');

/** "\n\n".join(rows) of a wiki.*.raw file. */
export function wikitextProtocolText(raw: string): string {
  const rows: string[] = [];
  let start = 0;
  while (start < raw.length) {
    const end = raw.indexOf('\n', start);
    const line = end < 0 ? raw.slice(start) : raw.slice(start, end + 1);
    rows.push(line === ' \n' ? '' : line);
    start = end < 0 ? raw.length : end + 1;
  }
  return rows.join('\n\n');
}

export async function readWikitext2(file = WIKITEXT2_FILE): Promise<string> {
  const raw = await readFile(file, 'utf8').catch((error: unknown) => {
    throw new BwqError(`cannot read the bundled WikiText-2 test split: ${(error as Error).message}`, { file, cause: error });
  });
  return wikitextProtocolText(raw);
}
