import { writeFileSync } from 'node:fs';
import { expect } from 'vitest';
import { BwqError } from '../../src/errors.js';

/** A safetensors file from a header (JSON text or raw bytes) and a data region. */
export function buildFile(path: string, header: string | Uint8Array, data: Uint8Array = new Uint8Array(0),
  headerLength?: bigint): string {
  const h = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  writeFileSync(path, out);
  return path;
}

/** Asserts that `promise` rejects with a one-line BwqError about `file` whose message matches. */
export async function expectBwqError(promise: Promise<unknown>, file: string, message: RegExp): Promise<BwqError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  expect(caught, 'expected a BwqError').toBeInstanceOf(BwqError);
  const error = caught as BwqError;
  expect(error.file).toBe(file);
  expect(error.message).toMatch(message);
  expect(error.oneLine()).not.toContain('\n');
  expect(error.oneLine().startsWith(`${file}: `)).toBe(true);
  return error;
}
