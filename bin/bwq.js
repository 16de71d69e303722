#!/usr/bin/env node
// Entry point: runs the compiled CLI (npm install / npm run build produce dist/).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'cli', 'main.js');
if (!existsSync(entry)) {
  process.stderr.write(`bwq: ${entry}: not built; run \`npm install\` (or \`npm run build\`) in ${root}\n`);
  process.exit(2);
}
const { main } = await import(entry);
process.exitCode = await main(process.argv);
