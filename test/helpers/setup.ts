/**
 * Runs in every test worker: after each test file, remove the empty `mat-debug-<pid>.log` that
 * onnxruntime leaves in the temporary directory (src/onnx/ort-debug-log.ts does this at exit for the
 * CLI, but vitest ends its workers without an 'exit' event).
 */
import { statSync, unlinkSync } from 'node:fs';
import { afterAll } from 'vitest';
import { ortDebugLogPath } from '../../src/onnx/ort-debug-log.js';

afterAll(() => {
  try {
    if (statSync(ortDebugLogPath()).size === 0) unlinkSync(ortDebugLogPath());
  } catch {
    // none made by this worker
  }
});
