import type { Command } from 'commander';
import { BwqError } from '../../errors.js';

/** Placeholder until its issue lands: says so and exits with code 2. */
export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('bench (not built yet)')
    .allowUnknownOption()
    .argument('[args...]')
    .option('--json', 'machine-readable output')
    .action(() => {
      throw new BwqError('`bwq bench` is not built yet', { exitCode: 2 });
    });
}
