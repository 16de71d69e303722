/**
 * Errno errors on output paths become one line naming the path and the real cause (src/fs/errno.ts),
 * and parent directories are made one level at a time (src/fs/mkdir.ts). The tests run as root, so
 * EACCES/EROFS/ENOSPC are tested through the mapping function; /proc gives a real failure end to end.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BwqError } from '../../src/errors.js';
import { isErrnoError, outputError, plainCause } from '../../src/fs/errno.js';
import { makeDirectories, removeCreatedDirectories } from '../../src/fs/mkdir.js';
import { checkFreeSpace, freeBytes } from '../../src/fs/free-space.js';
import { formatSize } from '../../src/fs/size.js';
import { tempDirs } from '../helpers/temp-dirs.js';

const tempDir = tempDirs();

function errno(code: string, syscall: string, path?: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: something, ${syscall} '${path ?? ''}'`) as NodeJS.ErrnoException;
  e.code = code;
  e.syscall = syscall;
  if (path !== undefined) e.path = path;
  return e;
}

describe('outputError', () => {
  it.each([
    ['EROFS', 'mkdir', '/mnt/ro/out', '/mnt/ro/out: cannot create directory: read-only file system (EROFS)'],
    ['ENOSPC', 'write', undefined, 'OUT: cannot write: no space left on device (ENOSPC)'],
    ['EACCES', 'open', '/srv/x/model.safetensors', '/srv/x/model.safetensors: cannot write: permission denied (EACCES)'],
    ['EDQUOT', 'write', undefined, 'OUT: cannot write: disk quota exceeded (EDQUOT)'],
    ['EPERM', 'rename', '/a/b', '/a/b: cannot rename: operation not permitted (EPERM)'],
    ['EWEIRD', 'mkdir', '/a', '/a: cannot create directory: EWEIRD'],
  ])('%s on %s', (code, syscall, path, line) => {
    const mapped = outputError(errno(code, syscall, path), path ?? 'OUT');
    expect(mapped).toBeInstanceOf(BwqError);
    expect((mapped as BwqError).oneLine()).toBe(line);
    expect((mapped as BwqError).cause).toBeInstanceOf(Error);
  });

  it('uses the error\'s own path by default; passes BwqErrors and non-errno errors through', () => {
    expect((outputError(errno('EROFS', 'open', '/r/f')) as BwqError).file).toBe('/r/f');
    const b = new BwqError('x');
    expect(outputError(b, '/p')).toBe(b);
    const plain = new TypeError('nope');
    expect(outputError(plain, '/p')).toBe(plain);
    expect(isErrnoError(errno('ENOENT', 'open'))).toBe(true);
    expect(isErrnoError(plain)).toBe(false);
    expect(plainCause('ENOSPC')).toBe('no space left on device (ENOSPC)');
  });
});

describe('makeDirectories', () => {
  it('makes missing parents one level at a time and reports them; removal undoes exactly those', async () => {
    const root = tempDir('bwq-mkdir-');
    mkdirSync(join(root, 'kept'));
    const created = await makeDirectories(join(root, 'kept', 'a', 'b'));
    expect(created).toEqual([join(root, 'kept', 'a'), join(root, 'kept', 'a', 'b')]);
    expect(await makeDirectories(join(root, 'kept', 'a', 'b'))).toEqual([]);
    await removeCreatedDirectories(created);
    expect(existsSync(join(root, 'kept', 'a'))).toBe(false);
    expect(existsSync(join(root, 'kept'))).toBe(true);
  });

  it('a file in the path', async () => {
    const root = tempDir('bwq-mkdir-');
    writeFileSync(join(root, 'f'), 'x');
    await expect(makeDirectories(join(root, 'f', 'a', 'b'))).rejects.toThrow(/^cannot create a directory under it: it is not a directory$/);
    const error = await makeDirectories(join(root, 'f', 'a')).catch((e: unknown) => e);
    expect((error as BwqError).file).toBe(join(root, 'f'));
  });

  it.runIf(process.platform === 'linux')('/proc refuses new directories: one line, at once', async () => {
    const t0 = performance.now();
    const error = await makeDirectories(`/proc/bwq-mkdir-${process.pid}/a/b`).catch((e: unknown) => e);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect((error as BwqError).oneLine()).toBe(`/proc/bwq-mkdir-${process.pid}: cannot create directory: this file system does not allow new directories here (ENOENT)`);
  }, 5000);
});

describe('free space', () => {
  it('statfs gives a positive number for the temporary directory', async () => {
    expect(await freeBytes(tempDir('bwq-statfs-'))).toBeGreaterThan(0);
  });

  it('checkFreeSpace refuses with both numbers; unknown free space is accepted', () => {
    expect(() => checkFreeSpace('/out', 3 * 2 ** 30, 2 ** 20, 'parts')).toThrow(/^needs about 3\.0 GiB of disk space \(parts\) but its file system has 1\.0 MiB free$/);
    expect(() => checkFreeSpace('/out', 10, 10, 'parts')).not.toThrow();
    expect(() => checkFreeSpace('/out', 10, undefined, 'parts')).not.toThrow();
    expect([formatSize(812), formatSize(1536), formatSize(52.4 * 2 ** 30), formatSize(300 * 2 ** 20)]).toEqual(['812 B', '1.5 KiB', '52.4 GiB', '300 MiB']);
  });
});
