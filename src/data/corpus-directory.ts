/**
 * A directory as a calibration or evaluation corpus: its files whose names corpusFileName accepts
 * (.txt, .jsonl, .ndjson, .json, .parquet, each optionally .gz; not hidden), not its
 * subdirectories, in name order (JavaScript string order: UTF-16 code units, so "10-a" sorts before
 * "9-a": zero-pad numbers, as dataset shards are). Other files (README.md, .gitattributes) are ignored.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BwqError } from '../errors.js';
import { CORPUS_EXTENSIONS, corpusFileName } from './corpus-format.js';

export async function corpusFilesIn(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (error) {
    throw new BwqError(`cannot list the directory: ${(error as Error).message}`, { file: dir });
  }
  const files: string[] = [];
  for (const name of names.filter(corpusFileName).sort()) {
    const path = join(dir, name);
    if ((await stat(path).catch(() => undefined))?.isFile() === true) files.push(path);
  }
  if (files.length === 0) {
    throw new BwqError(`directory has no corpus files (names ending in ${CORPUS_EXTENSIONS.join(', ')}, optionally followed by .gz)`, { file: dir });
  }
  return files;
}

/** The files a corpus path stands for: the directory's corpus files, or the path itself. */
export async function corpusInputFiles(path: string): Promise<string[]> {
  const info = await stat(path).catch(() => undefined);
  return info?.isDirectory() === true ? corpusFilesIn(path) : [path];
}
