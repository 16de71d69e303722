/**
 * Atomic outputs: write under a temporary name beside the destination, rename at the end.
 * A failure (or SIGINT/SIGTERM) removes the temporary, so no partial output is left in place.
 */
import { mkdir, rename, rm, writeFile, stat } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { BwqError } from '../errors.js';

const pendingTemporaries = new Set<string>();
let signalHandlersInstalled = false;

function installSignalCleanup(): void {
  if (signalHandlersInstalled) return;
  signalHandlersInstalled = true;
  const cleanup = (signal: NodeJS.Signals): void => {
    const hadPartial = pendingTemporaries.size > 0;
    for (const path of pendingTemporaries) rmSync(path, { recursive: true, force: true });
    pendingTemporaries.clear();
    if (hadPartial) process.stderr.write(`bwq: interrupted (${signal}); partial output removed\n`);
    // Hand the signal back to its default action (terminate with the signal's status).
    process.removeListener('SIGINT', cleanup);
    process.removeListener('SIGTERM', cleanup);
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', cleanup);
  process.once('SIGTERM', cleanup);
}

function temporaryNameFor(destination: string): string {
  return join(dirname(destination), `.${basename(destination)}.tmp-${process.pid}-${Date.now().toString(36)}`);
}

/**
 * Runs `produce(tempPath)` which must create a file (or directory) at tempPath; on success the
 * result is renamed onto `destination` (replacing an existing file; an existing directory is
 * replaced only when `replaceDirectory` is set). On any error the temporary is removed.
 */
export async function writeAtomically<T>(
  destination: string,
  produce: (tempPath: string) => Promise<T>,
  options: { replaceDirectory?: boolean } = {},
): Promise<T> {
  installSignalCleanup();
  await mkdir(dirname(destination), { recursive: true });
  const temp = temporaryNameFor(destination);
  pendingTemporaries.add(temp);
  try {
    const result = await produce(temp);
    const existing = await stat(destination).catch(() => undefined);
    if (existing?.isDirectory()) {
      if (!options.replaceDirectory) {
        throw new BwqError('output directory already exists (pass --force to replace it)', { file: destination });
      }
      await rm(destination, { recursive: true, force: true });
    }
    await rename(temp, destination);
    return result;
  } catch (error) {
    await rm(temp, { recursive: true, force: true });
    throw error;
  } finally {
    pendingTemporaries.delete(temp);
  }
}

/** Writes a whole file atomically. */
export async function writeFileAtomically(destination: string, data: string | Uint8Array): Promise<void> {
  await writeAtomically(destination, async (temp) => {
    await writeFile(temp, data);
  });
}
