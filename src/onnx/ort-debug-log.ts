/**
 * onnxruntime-node's bundled telemetry layer creates an empty `mat-debug-<pid>.log` in the temporary
 * directory (os.tmpdir()) the first time a session is made, and never removes it: without this, every
 * bwq run that uses onnxruntime (and every test process) leaves one file behind in /tmp. At exit we
 * remove this process's file when it is still empty.
 */
import { statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

let registered = false;

/** Path of the file onnxruntime creates for this process. */
export function ortDebugLogPath(pid = process.pid): string {
  return join(tmpdir(), `mat-debug-${pid}.log`);
}

/** Removes this process's empty onnxruntime debug log when the process exits (once per process). */
export function removeOrtDebugLogAtExit(): void {
  if (registered) return;
  registered = true;
  process.once('exit', () => {
    const path = ortDebugLogPath();
    try {
      if (statSync(path).size === 0) unlinkSync(path);
    } catch {
      // not there (or not ours to judge): leave it
    }
  });
}
