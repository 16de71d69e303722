/**
 * Atomic outputs: write under a temporary name beside the destination, rename at the end.
 * A failure (or SIGINT/SIGTERM) removes the temporary and the parent directories this write created,
 * so no partial output is left in place. An existing destination directory is replaced (only when
 * allowed) by a swap: old → backup name, temporary → destination, then the backup is removed; the two
 * renames run back to back synchronously, so Ctrl-C cannot land between them, and a failing second
 * rename puts the old output back. Errno errors become one-line BwqErrors naming the output path.
 */
import { lstat, rename, rm, writeFile } from 'node:fs/promises';
import { renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { BwqError } from '../errors.js';
import { isErrnoError, outputError } from './errno.js';
import { makeDirectories, makeDirectory, removeCreatedDirectories, removeCreatedDirectoriesSync } from './mkdir.js';

const pendingTemporaries = new Set<string>();
const pendingParents = new Set<readonly string[]>();
let signalHandlersInstalled = false;

function installSignalCleanup(): void {
  if (signalHandlersInstalled) return;
  signalHandlersInstalled = true;
  const cleanup = (signal: NodeJS.Signals): void => {
    const hadPartial = pendingTemporaries.size > 0;
    for (const path of pendingTemporaries) rmSync(path, { recursive: true, force: true });
    pendingTemporaries.clear();
    for (const created of pendingParents) removeCreatedDirectoriesSync(created);
    pendingParents.clear();
    if (hadPartial) process.stderr.write(`bwq: interrupted (${signal}); partial output removed\n`);
    // Hand the signal back to its default action (terminate with the signal's status).
    process.removeListener('SIGINT', cleanup);
    process.removeListener('SIGTERM', cleanup);
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', cleanup);
  process.once('SIGTERM', cleanup);
}

function siblingName(destination: string, kind: 'tmp' | 'old'): string {
  return join(dirname(destination), `.${basename(destination)}.${kind}-${process.pid}-${Date.now().toString(36)}`);
}

export interface AtomicOptions {
  /** an existing destination directory may be replaced (else: "already exists") */
  replaceDirectory?: boolean;
  /** runs just before an existing destination directory is replaced; throws to refuse */
  beforeReplace?: (destination: string) => Promise<void>;
  /** create the temporary as an empty directory before `produce` runs (fails fast on unwritable places) */
  directory?: boolean;
}

/**
 * Runs `produce(tempPath)` which must create a file (or directory) at tempPath; on success the
 * result is renamed onto `destination` (replacing an existing file; an existing directory is
 * replaced only when `replaceDirectory` is set and `beforeReplace` accepts). On any error the
 * temporary and the parents created for it are removed.
 */
export async function writeAtomically<T>(
  destination: string,
  produce: (tempPath: string) => Promise<T>,
  options: AtomicOptions = {},
): Promise<T> {
  installSignalCleanup();
  const target = resolve(destination);
  const created = await makeDirectories(dirname(target));
  pendingParents.add(created);
  const temp = siblingName(target, 'tmp');
  pendingTemporaries.add(temp);
  try {
    if (options.directory === true) await makeDirectory(temp, destination);
    const result = await produce(temp);
    const existing = await lstat(target).catch(() => undefined);
    if (existing?.isDirectory()) {
      if (!options.replaceDirectory) {
        throw new BwqError('output directory already exists (pass --force to replace it)', { file: destination });
      }
      await options.beforeReplace?.(destination);
      await swapDirectory(temp, target);
    } else {
      await rename(temp, target);
    }
    pendingParents.delete(created);
    return result;
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    await removeCreatedDirectories(created);
    pendingParents.delete(created);
    throw relocate(error, temp, destination);
  } finally {
    pendingTemporaries.delete(temp);
  }
}

/** Puts the finished `temp` at `target` in place of the existing directory there, then removes the old one. */
async function swapDirectory(temp: string, target: string): Promise<void> {
  const backup = siblingName(target, 'old');
  renameSync(target, backup);
  try {
    renameSync(temp, target);
  } catch (error) {
    renameSync(backup, target);
    throw error;
  }
  pendingTemporaries.delete(temp);
  pendingTemporaries.add(backup);
  try {
    await rm(backup, { recursive: true, force: true });
  } catch (error) {
    process.stderr.write(`bwq: warning: ${backup}: the previous output could not be removed (${isErrnoError(error) ? error.code : String(error)})\n`);
  } finally {
    pendingTemporaries.delete(backup);
  }
}

/**
 * An error met while producing the output, as the user should see it: errno errors on the temporary
 * (or on an unnamed file descriptor being written) become BwqErrors naming the destination path; a
 * BwqError about a path inside the temporary is renamed likewise. Other errors pass unchanged.
 */
function relocate(error: unknown, temp: string, destination: string): unknown {
  const inside = (p: string): boolean => p === temp || p.startsWith(temp + sep);
  const moved = (p: string): string => destination + p.slice(temp.length);
  if (error instanceof BwqError) {
    if (error.file === undefined || !inside(error.file)) return error;
    return new BwqError(error.message, { file: moved(error.file), exitCode: error.exitCode, cause: error.cause ?? error });
  }
  if (!isErrnoError(error)) return error;
  if (error.path === undefined) return error.syscall === 'read' ? error : outputError(error, destination);
  const path = resolve(error.path);
  if (inside(path)) return outputError(error, moved(path));
  if (path === resolve(destination) || path === dirname(resolve(destination))) return outputError(error, path);
  return error;
}

/** Writes a whole file atomically. */
export async function writeFileAtomically(destination: string, data: string | Uint8Array): Promise<void> {
  await writeAtomically(destination, async (temp) => {
    await writeFile(temp, data);
  });
}
