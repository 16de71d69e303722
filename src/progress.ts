/** What long-running work reports its progress to (src/cli/progress.ts draws it: a spinner, or plain lines). */
export interface Progress {
  /** Start (or restart) a task with a label. */
  start(label: string): void;
  /** Update the current task: `done` of `total` steps, with an optional detail. */
  update(done: number, total: number, detail?: string): void;
  /** Finish the current task successfully with a closing line. */
  succeed(text?: string): void;
  /** Finish the current task as failed. */
  fail(text?: string): void;
  /** A plain informational line. */
  info(text: string): void;
}
