/** Paths inside the installed bwq package: its root, the bundled model and the bundled texts. */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** Package root: this file is src/package-paths.ts (or dist/package-paths.js), one level down. */
export const PACKAGE_ROOT = fileURLToPath(new URL('../', import.meta.url));
export const DEFAULT_MODEL_DIR = join(PACKAGE_ROOT, 'models', 'sotu-llama');
export const DEFAULT_EVAL_DATASET = join(PACKAGE_ROOT, 'data', 'sotu-test.txt');
export const DEFAULT_CALIBRATION_TEXT = join(PACKAGE_ROOT, 'calibration', 'sotu-calib.txt');
