/** Paths inside the installed bwq package (bundled model and evaluation text). */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** Package root: this file is src/eval/paths.ts (or dist/eval/paths.js), two levels down. */
export const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DEFAULT_MODEL_DIR = join(PACKAGE_ROOT, 'models', 'sotu-llama');
export const DEFAULT_EVAL_DATASET = join(PACKAGE_ROOT, 'data', 'sotu-test.txt');
