/**
 * Python's notion of whitespace (`str.isspace`, used by `str.rstrip()`), which lm-eval-harness relies on to move
 * a context's trailing whitespace into the continuation. It differs from JavaScript's `\s`: it includes the
 * information separators U+001C–U+001F and NEXT LINE U+0085, and excludes U+FEFF.
 */
const PYTHON_WHITESPACE = new Set<number>([
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
  0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
]);

/** Python's `text.rstrip()`. */
export function pythonRstrip(text: string): string {
  let end = text.length;
  while (end > 0 && PYTHON_WHITESPACE.has(text.charCodeAt(end - 1))) end--;
  return text.slice(0, end);
}

/** Python's `len(text)`: Unicode code points (a character outside the BMP is one, not two UTF-16 units). */
export function pythonLength(text: string): number {
  return Array.from(text).length;
}
