import type { Command } from 'commander';
import { BwqError } from '../../errors.js';

/** Placeholder until its issue lands: says so and exits with code 2. */
export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('inspect (not built yet)')
    .allowUnknownOption()
    .argument('[args...]')
    .option('--json', 'machine-readable output')
    .action(() => {
      throw new BwqError('`bwq inspect` is not built yet', { exitCode: 2 });
    });
}
