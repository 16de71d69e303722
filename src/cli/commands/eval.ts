import type { Command } from 'commander';
import { BwqError } from '../../errors.js';

/** Placeholder until its issue lands: says so and exits with code 2. */
export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('eval (not built yet)')
    .allowUnknownOption()
    .argument('[args...]')
    .option('--json', 'machine-readable output')
    .action(() => {
      throw new BwqError('`bwq eval` is not built yet', { exitCode: 2 });
    });
}
