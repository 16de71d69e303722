/**
 * One error type for everything a user can get wrong (bad files, flags, shapes).
 * The CLI prints it as a single line: `bwq: <file>: <problem>` and exits non-zero.
 */
export class BwqError extends Error {
  /** The file (or directory) the problem is about, when there is one. */
  readonly file: string | undefined;
  /** Process exit code the CLI uses for this error (default 1; 2 for usage errors; GATE_FAILED_EXIT_CODE). */
  readonly exitCode: number;
  /** The command printed its result before failing (a failed quality gate): --json prints no error object. */
  readonly resultPrinted: boolean;

  constructor(message: string, options: { file?: string; exitCode?: number; cause?: unknown; resultPrinted?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BwqError';
    this.file = options.file;
    this.exitCode = options.exitCode ?? 1;
    this.resultPrinted = options.resultPrinted ?? false;
  }

  /** The one-line form printed by the CLI. */
  oneLine(): string {
    const text = this.message.replace(/\s*\n\s*/g, ' ');
    return this.file === undefined ? text : `${this.file}: ${text}`;
  }
}

/** Exit code of `bwq eval` when a quality gate (--max-ppl, --max-ppl-ratio, --max-kld) fails (src/eval/gates.ts). */
export const GATE_FAILED_EXIT_CODE = 3;

/** Usage error (bad flag or argument): exit code 2. */
export function usageError(message: string): BwqError {
  return new BwqError(message, { exitCode: 2 });
}
