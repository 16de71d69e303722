/**
 * Documents of a parquet corpus (the format Hugging Face datasets ship): the values of one
 * top-level string column, `field` (default "text"), row by row over all row groups, through
 * hyparquet with hyparquet-compressors (snappy, gzip, zstd, brotli, lz4). Null and empty values are
 * skipped. Each value is decoded as strict UTF-8 here (hyparquet's own decoding would replace bad
 * bytes), so a value that is not UTF-8 is refused with its row. A file that is not parquet, is
 * truncated, has no such column or a column that is not of strings (BYTE_ARRAY) is refused in one
 * line naming the file.
 */
import { parquetMetadata, parquetReadObjects, parquetSchema, type FileMetaData, type SchemaTree } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { BwqError } from '../errors.js';
import { firstInvalidByte } from './text-decode.js';

const MAGIC = [0x50, 0x41, 0x52, 0x31]; // "PAR1"
const ENCRYPTED_MAGIC = [0x50, 0x41, 0x52, 0x45]; // "PARE"

export async function parquetDocuments(bytes: Uint8Array, field: string, file: string): Promise<string[]> {
  const buffer = exactArrayBuffer(bytes);
  const metadata = readMetadata(bytes, buffer, file);
  const column = textColumn(metadata, field, file);
  let rows: Record<string, unknown>[];
  try {
    rows = await parquetReadObjects({
      file: buffer,
      metadata,
      columns: [column.element.name],
      compressors,
      // the raw bytes: decoded strictly below
      parsers: { stringFromBytes: (value: Uint8Array) => value, jsonFromBytes: (value: Uint8Array) => value },
    });
  } catch (error) {
    throw new BwqError(`not a readable parquet file: ${(error as Error).message}`, { file });
  }
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const documents: string[] = [];
  rows.forEach((row, i) => {
    const value = row[column.element.name];
    if (value === null || value === undefined) return;
    let text: string;
    if (typeof value === 'string') text = value;
    else if (value instanceof Uint8Array) {
      try {
        text = decoder.decode(value);
      } catch {
        throw new BwqError(`row ${i} (counting from 0): column "${field}" is not UTF-8 text (invalid UTF-8 at byte ${firstInvalidByte(value)} of the value)`, { file });
      }
    } else throw new BwqError(`row ${i} (counting from 0): column "${field}" holds a ${typeof value}, not a string`, { file });
    if (text.length > 0) documents.push(text);
  });
  return documents;
}

function exactArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) return bytes.buffer;
  return bytes.slice().buffer;
}

function hasMagic(bytes: Uint8Array, at: number, magic: readonly number[]): boolean {
  return magic.every((b, i) => bytes[at + i] === b);
}

function readMetadata(bytes: Uint8Array, buffer: ArrayBuffer, file: string): FileMetaData {
  if (bytes.length < 12 || !hasMagic(bytes, 0, MAGIC)) {
    throw new BwqError('not a parquet file (it does not start with "PAR1")', { file });
  }
  if (hasMagic(bytes, bytes.length - 4, ENCRYPTED_MAGIC)) throw new BwqError('encrypted parquet, which bwq does not read', { file });
  if (!hasMagic(bytes, bytes.length - 4, MAGIC)) {
    throw new BwqError('truncated parquet file (it does not end with "PAR1", so its footer is missing)', { file });
  }
  try {
    return parquetMetadata(buffer);
  } catch (error) {
    throw new BwqError(`not a readable parquet file: ${(error as Error).message}`, { file });
  }
}

/** The top-level column `field`, which must hold strings (BYTE_ARRAY, not repeated or nested). */
function textColumn(metadata: FileMetaData, field: string, file: string): SchemaTree {
  const columns = parquetSchema(metadata).children;
  const column = columns.find((c) => c.element.name === field);
  if (column === undefined) {
    const names = columns.map((c) => c.element.name).join(', ');
    throw new BwqError(`no column "${field}" (columns: ${names}); name the text column with --text-field`, { file });
  }
  const { element } = column;
  const kind = column.children.length > 0 || element.num_children !== undefined
    ? (element.logical_type?.type ?? element.converted_type ?? 'group').toLowerCase()
    : element.repetition_type === 'REPEATED' ? `repeated ${element.type}` : element.type;
  if (kind !== 'BYTE_ARRAY') throw new BwqError(`column "${field}" is not a string column (it is ${kind})`, { file });
  return column;
}
