import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // removes what onnxruntime leaves in /tmp (the suite leaves nothing behind)
    setupFiles: ['test/helpers/setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores on CI: run files in parallel but keep heavy suites from oversubscribing.
    pool: 'forks',
    maxWorkers: 2,
  },
});
