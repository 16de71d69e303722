/**
 * sha256 of a calibration corpus, for run fingerprints and reports (src/pipeline/checkpoint.ts): of a
 * file, its bytes' sha256; of a directory, the sha256 of the lines "NAME SHA256\n" of the corpus files
 * it reads (src/data/corpus-directory.ts), in reading order, so adding, removing, renaming or changing
 * one of them changes the digest and files it ignores do not.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { corpusFilesIn } from './corpus-directory.js';

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export async function corpusDigest(path: string): Promise<string> {
  if (!(await stat(path)).isDirectory()) return sha256File(path);
  const hash = createHash('sha256');
  for (const file of await corpusFilesIn(path)) hash.update(`${basename(file)} ${await sha256File(file)}\n`);
  return hash.digest('hex');
}
