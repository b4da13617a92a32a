import { readFileSync } from "node:fs";

/**
 * A strict reader of NumPy .npy files (format versions 1.0 and 2.0), for the reference arrays
 * under shared/models/token-ids. Only little-endian '<i4' and '<f4' in C order are accepted;
 * anything else is an error naming the file, never a silent reinterpretation.
 * Format: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
 */

export type NpyArray = { shape: number[]; data: Int32Array } | { shape: number[]; data: Float32Array };

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
/** Header alignment the format promises (numpy pads the header so the data starts aligned). */
const HEADER_ALIGN = 16;

export function readNpy(file: string): NpyArray {
  return parseNpy(readFileSync(file), file);
}

export function parseNpy(bytes: Uint8Array, file = "<npy>"): NpyArray {
  const fail = (what: string): never => {
    throw new Error(`${file}: ${what}`);
  };
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) fail("not a .npy file (bad magic)");
  const major = bytes[6]!;
  const minor = bytes[7]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerStart: number;
  let headerLength: number;
  if (major === 1 && minor === 0) {
    headerStart = 10;
    headerLength = view.getUint16(8, true);
  } else if (major === 2 && minor === 0) {
    if (bytes.length < 12) fail("truncated v2 preamble");
    headerStart = 12;
    headerLength = view.getUint32(8, true);
  } else {
    return fail(`unsupported .npy version ${major}.${minor} (expected 1.0 or 2.0)`);
  }
  const dataStart = headerStart + headerLength;
  if (dataStart > bytes.length) fail(`header length ${headerLength} runs past the end of the file (${bytes.length} bytes)`);
  if (dataStart % HEADER_ALIGN !== 0) fail(`data starts at byte ${dataStart}, not a multiple of ${HEADER_ALIGN}`);
  const header = new TextDecoder("latin1").decode(bytes.subarray(headerStart, dataStart));
  if (!header.endsWith("\n")) fail("header does not end with a newline");

  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) return fail(`header is not a descr/fortran_order/shape dict: ${header.trim()}`);
  if (fortran !== "False") fail("Fortran-ordered arrays are not supported (expected C order)");
  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => {
      if (!/^\d+$/.test(s)) fail(`bad dimension "${s}" in shape (${shapeText})`);
      return Number(s);
    });
  const count = shape.reduce((a, b) => a * b, 1);
  if (!Number.isSafeInteger(count)) fail(`shape (${shapeText}) is too large`);

  if (descr !== "<i4" && descr !== "<f4") return fail(`unsupported dtype '${descr}' (expected '<i4' or '<f4')`);
  const dataBytes = count * 4;
  if (bytes.length - dataStart !== dataBytes) fail(`expected ${dataBytes} data bytes for shape (${shapeText}) of ${descr}, found ${bytes.length - dataStart}`);
  // Copy into a fresh, aligned buffer of its own (a Buffer's slice() would share the file's).
  const raw = new ArrayBuffer(dataBytes);
  new Uint8Array(raw).set(bytes.subarray(dataStart, dataStart + dataBytes));
  if (!littleEndianHost()) fail("big-endian hosts are not supported");
  return descr === "<i4" ? { shape, data: new Int32Array(raw) } : { shape, data: new Float32Array(raw) };
}

function littleEndianHost(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}
