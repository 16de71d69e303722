/**
 * Free space of the file system holding a path (fs.statfs: blocks available to unprivileged users
 * × block size), and the up-front refusal when an output will not fit.
 */
import { statfs } from 'node:fs/promises';
import { BwqError } from '../errors.js';
import { formatSize } from './size.js';

/** Bytes available on the file system holding `path`; undefined when statfs cannot tell. */
export async function freeBytes(path: string): Promise<number | undefined> {
  try {
    const s = await statfs(path);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return undefined;
  }
}

/**
 * BwqError naming `file` when `free` (bytes; undefined = unknown, accepted) is less than `needed`;
 * the message gives both numbers and `detail` (what the estimate is made of).
 */
export function checkFreeSpace(file: string, needed: number, free: number | undefined, detail: string): void {
  if (free === undefined || free >= needed) return;
  throw new BwqError(`needs about ${formatSize(needed)} of disk space (${detail}) but its file system has ${formatSize(free)} free`, { file });
}
