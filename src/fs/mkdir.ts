/**
 * Creating an output's parent directories, one level at a time: `mkdir -p` that never hangs and
 * fails with one line. (Node's `mkdir(path, { recursive: true })` loops forever at full CPU when the
 * file system answers ENOENT for a directory whose parent exists, as /proc does.) It reports which
 * directories it created, so a failed run can remove exactly those again.
 */
import { mkdir, rmdir, stat } from 'node:fs/promises';
import { rmdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { BwqError } from '../errors.js';
import { isErrnoError, outputError } from './errno.js';

/**
 * Makes `path` and its missing parents; returns the directories it created, outermost first.
 * BwqError naming the directory and the cause when one cannot be created or a component is a file.
 */
export async function makeDirectories(path: string): Promise<string[]> {
  const missing: string[] = [];
  let current = resolve(path);
  for (;;) {
    let info;
    try {
      info = await stat(current);
    } catch (error) {
      if (!isErrnoError(error) || (error.code !== 'ENOENT' && error.code !== 'ENOTDIR')) throw outputError(error, current);
      const parent = dirname(current);
      if (parent === current) throw outputError(error, current);
      missing.unshift(current);
      current = parent;
      continue;
    }
    if (!info.isDirectory()) throw new BwqError('cannot create a directory under it: it is not a directory', { file: current });
    break;
  }
  const created: string[] = [];
  try {
    for (const dir of missing) {
      try {
        await makeDirectory(dir, dir);
        created.push(dir);
      } catch (error) {
        if (error instanceof BwqError && isErrnoError(error.cause) && error.cause.code === 'EEXIST'
          && (await stat(dir).catch(() => undefined))?.isDirectory()) continue;
        throw error;
      }
    }
  } catch (error) {
    await removeCreatedDirectories(created);
    throw error;
  }
  return created;
}

/**
 * Makes one directory whose parent exists; BwqError naming `file` (default `path`) with the cause.
 * ENOENT here means the file system takes no new directories (as in /proc), not a missing parent.
 */
export async function makeDirectory(path: string, file = path): Promise<void> {
  try {
    await mkdir(path);
  } catch (error) {
    if (isErrnoError(error) && error.code === 'ENOENT') {
      throw new BwqError('cannot create directory: this file system does not allow new directories here (ENOENT)', { file, cause: error });
    }
    throw outputError(error, file);
  }
}

/** Removes directories made by makeDirectories (innermost first) while they are empty; never throws. */
export async function removeCreatedDirectories(created: readonly string[]): Promise<void> {
  for (let i = created.length - 1; i >= 0; i--) {
    try {
      await rmdir(created[i]!);
    } catch {
      return;
    }
  }
}

/** Synchronous removeCreatedDirectories, for signal handlers. */
export function removeCreatedDirectoriesSync(created: readonly string[]): void {
  for (let i = created.length - 1; i >= 0; i--) {
    try {
      rmdirSync(created[i]!);
    } catch {
      return;
    }
  }
}
