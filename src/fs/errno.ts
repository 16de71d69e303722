/**
 * Node's errno errors (EROFS, ENOSPC, EACCES, …) on output paths → one-line BwqErrors that name the
 * path and say the real cause in plain words, instead of "internal error: ENOENT … mkdir".
 */
import { BwqError } from '../errors.js';

/** A Node system error: `code` (e.g. 'ENOSPC') and, for most calls, `syscall` and `path`. */
export interface ErrnoError extends Error {
  code: string;
  syscall?: string;
  path?: string;
}

export function isErrnoError(error: unknown): error is ErrnoError {
  return error instanceof Error && typeof (error as Partial<ErrnoError>).code === 'string'
    && /^E[A-Z0-9]+$/.test((error as ErrnoError).code);
}

/** Plain-words causes of the errno codes an output path can meet. */
const CAUSES: Readonly<Record<string, string>> = {
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOTDIR: 'a component of the path is not a directory',
  EISDIR: 'is a directory',
  EEXIST: 'already exists',
  ENAMETOOLONG: 'file name too long',
  ELOOP: 'too many levels of symbolic links',
  EIO: 'input/output error',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  EFBIG: 'file too large for the file system',
  EXDEV: 'not on the same file system',
  ENOTEMPTY: 'directory not empty',
  EBUSY: 'device or resource busy',
  ENOENT: 'no such file or directory',
};

/** What bwq was doing, from the failing system call. */
function action(syscall: string | undefined): string {
  switch (syscall) {
    case 'mkdir': return 'cannot create directory';
    case 'rename': return 'cannot rename';
    case 'rmdir':
    case 'rm':
    case 'unlink': return 'cannot remove';
    case 'open':
    case 'write':
    case 'writev':
    case 'close':
    case 'fsync':
    case 'copyfile':
    case 'ftruncate': return 'cannot write';
    case 'statfs': return 'cannot read free space';
    case 'scandir': return 'cannot list directory';
    case 'stat':
    case 'lstat':
    case 'realpath': return 'cannot access';
    default: return 'cannot write';
  }
}

/** The plain cause of an errno code, e.g. "read-only file system (EROFS)". */
export function plainCause(code: string): string {
  const words = CAUSES[code];
  return words === undefined ? code : `${words} (${code})`;
}

/**
 * An errno error on an output path as a BwqError naming `path` (default: the error's own path) with
 * what failed and why; a BwqError passes through unchanged, anything else is returned as is.
 */
export function outputError(error: unknown, path?: string): unknown {
  if (error instanceof BwqError || !isErrnoError(error)) return error;
  const file = path ?? error.path;
  return new BwqError(`${action(error.syscall)}: ${plainCause(error.code)}`, { ...(file === undefined ? {} : { file }), cause: error });
}
