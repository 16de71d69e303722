/**
 * Progress reporting on stderr. Spinners (ora) only on an interactive terminal;
 * with CI=true, a non-TTY stderr, or --json, progress goes out as plain lines
 * (or not at all when quiet), so logs stay readable and stdout stays machine-clean.
 */
import ora, { type Ora } from 'ora';

import type { Progress } from '../progress.js';

export type { Progress };

export interface ProgressOptions {
  /** Suppress everything (e.g. --json or --quiet). */
  quiet?: boolean;
  stream?: NodeJS.WriteStream;
}

export function isInteractive(stream: NodeJS.WriteStream = process.stderr): boolean {
  const ci = process.env['CI'];
  return Boolean(stream.isTTY) && !(ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false');
}

export function createProgress(options: ProgressOptions = {}): Progress {
  const stream = options.stream ?? process.stderr;
  if (options.quiet) return silentProgress();
  if (isInteractive(stream)) return spinnerProgress(stream);
  return plainProgress(stream);
}

function silentProgress(): Progress {
  const noop = (): void => {};
  return { start: noop, update: noop, succeed: noop, fail: noop, info: noop };
}

function bar(done: number, total: number, width = 20): string {
  const fraction = total > 0 ? Math.min(1, done / total) : 0;
  const filled = Math.round(fraction * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`;
}

function spinnerProgress(stream: NodeJS.WriteStream): Progress {
  let spinner: Ora | undefined;
  let label = '';
  return {
    start(text) {
      spinner?.stop();
      label = text;
      spinner = ora({ text, stream }).start();
    },
    update(done, total, detail) {
      if (spinner) spinner.text = `${label} ${bar(done, total)}${detail ? ` ${detail}` : ''}`;
    },
    succeed(text) {
      spinner?.succeed(text ?? label);
      spinner = undefined;
    },
    fail(text) {
      spinner?.fail(text ?? label);
      spinner = undefined;
    },
    info(text) {
      if (spinner) spinner.info(text).start(label);
      else stream.write(`${text}\n`);
    },
  };
}

/** Plain lines; updates are throttled to at most one line per 10% of progress. */
function plainProgress(stream: NodeJS.WriteStream): Progress {
  let label = '';
  let lastDecile = -1;
  return {
    start(text) {
      label = text;
      lastDecile = -1;
      stream.write(`${text}...\n`);
    },
    update(done, total, detail) {
      const decile = total > 0 ? Math.floor((10 * done) / total) : 0;
      if (decile === lastDecile && done !== total) return;
      lastDecile = decile;
      stream.write(`${label} ${done}/${total}${detail ? ` ${detail}` : ''}\n`);
    },
    succeed(text) {
      stream.write(`done: ${text ?? label}\n`);
    },
    fail(text) {
      stream.write(`failed: ${text ?? label}\n`);
    },
    info(text) {
      stream.write(`${text}\n`);
    },
  };
}
