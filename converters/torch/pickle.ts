import { halfPrecisionValues } from "../../formats/dense/float-bits.js";
import { FormatError, type ErrorContext } from "../../formats/errors.js";

/**
 * A restricted pickle machine for the `data.pkl` of a `torch.save` archive (Python's
 * Lib/pickle.py and pickletools.py are the reference for every opcode below). It never runs
 * code: it knows ~40 opcodes, builds plain values, and resolves only the globals listed in
 * `GLOBALS`, whose meaning lmpack implements itself:
 *
 *   torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
 *                                      → TorchTensor (geometry checked against the storage)
 *   torch._utils._rebuild_parameter(tensor, requires_grad, hooks) → the tensor
 *   collections.OrderedDict()          → an empty Map
 *   torch.<Float|Double|Half|BFloat16|Long|Int|Short|Char|Byte|Bool>Storage
 *                                      → only as the dtype inside a persistent id
 *
 * BINPERSID ids are torch's storage references ('storage', <storage class>, key, location,
 * numel); the bytes live in the archive's `data/<key>` entry and are read by the caller.
 * Any other global, any other opcode (BUILD, NEWOBJ, INST, OBJ, EXT*, ...), a REDUCE of
 * anything but the callables above, and every structural error is a FormatError carrying the
 * byte offset of the opcode in data.pkl. Codes: a global or opcode lmpack refuses is
 * LAYOUT_UNKNOWN (`actual` names it); a malformed program is METADATA_INVALID; a read past the
 * end is DATA_TRUNCATED; a cap is HEADER_TOO_LARGE / HEADER_TOO_DEEP.
 */

/** Values on the stack at once. A torch.save pickle holds a few per tensor. */
export const PICKLE_MAX_STACK = 1 << 20;
/** Open MARKs at once: a state dict nests 3 or 4 deep. */
export const PICKLE_MAX_MARK_DEPTH = 256;
/** Memo entries: torch memoizes a handful of objects per tensor. */
export const PICKLE_MAX_MEMO = 1 << 20;
/** One string's UTF-8 bytes: keys and global names, never data. */
export const PICKLE_MAX_STRING_BYTES = 1 << 20;
/** LONG1 payload bytes: counts and sizes fit 8 bytes; 16 leaves room without admitting bignums. */
export const PICKLE_MAX_LONG_BYTES = 16;
/** Tensor rank. */
export const TORCH_MAX_RANK = 16;

export class PickleTuple {
  constructor(readonly items: readonly PickleValue[]) {}
}

export class PickleGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }
}

export type TorchDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** Storage classes as torch pickles them (torch/storage.py `_pickle_storage_type`), with their element sizes. */
export const TORCH_STORAGE_TYPES: Record<string, { dtype: TorchDType; bytes: number }> = {
  DoubleStorage: { dtype: "F64", bytes: 8 },
  FloatStorage: { dtype: "F32", bytes: 4 },
  HalfStorage: { dtype: "F16", bytes: 2 },
  BFloat16Storage: { dtype: "BF16", bytes: 2 },
  LongStorage: { dtype: "I64", bytes: 8 },
  IntStorage: { dtype: "I32", bytes: 4 },
  ShortStorage: { dtype: "I16", bytes: 2 },
  CharStorage: { dtype: "I8", bytes: 1 },
  ByteStorage: { dtype: "U8", bytes: 1 },
  BoolStorage: { dtype: "BOOL", bytes: 1 },
};

export class TorchStorage {
  constructor(readonly dtype: TorchDType, readonly elementBytes: number, readonly key: string, readonly location: string, readonly numel: number) {}
}

export class TorchTensor {
  constructor(readonly storage: TorchStorage, readonly storageOffset: number, readonly shape: readonly number[], readonly stride: readonly number[]) {}
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
}

export type PickleKey = string | number | bigint | boolean | null;
export type PickleValue = PickleKey | PickleValue[] | PickleTuple | Map<PickleKey, PickleValue> | PickleGlobal | TorchStorage | TorchTensor;

type Reducer = (args: readonly PickleValue[], fail: Fail) => PickleValue;
type Fail = (code: "LAYOUT_UNKNOWN" | "METADATA_INVALID" | "SHAPE_SIZE_MISMATCH", detail: string, context?: ErrorContext) => never;

const CALLABLES: Record<string, Reducer> = {
  "torch._utils._rebuild_tensor_v2": rebuildTensorV2,
  "torch._utils._rebuild_parameter": (args, fail) => {
    const [data, requiresGrad, hooks] = args;
    if (args.length !== 3 || !(data instanceof TorchTensor) || typeof requiresGrad !== "boolean" || !isEmptyMap(hooks)) return fail("METADATA_INVALID", "_rebuild_parameter expects (tensor, bool, empty OrderedDict)");
    return data;
  },
  "collections.OrderedDict": (args, fail) => {
    if (args.length !== 0) fail("METADATA_INVALID", "OrderedDict(...) with arguments is not read; torch pickles it empty and fills it with SETITEMS");
    return new Map();
  },
};

const STORAGE_MODULE = "torch";

/** Runs the pickle program in `bytes` and returns the value STOP leaves. `file` names data.pkl in errors. */
export function unpickle(bytes: Uint8Array, file: string): PickleValue {
  return new Machine(bytes, file).run();
}

class Machine {
  private pos = 0;
  private at = 0;
  private readonly stack: PickleValue[] = [];
  private readonly marks: number[] = [];
  private readonly memo = new Map<number, PickleValue>();
  private readonly storages = new Map<string, TorchStorage>();
  private readonly view: DataView;

  constructor(private readonly bytes: Uint8Array, private readonly file: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private readonly fail: Fail = (code, detail, context = {}) => {
    throw new FormatError(code, detail, { file: this.file, byteOffset: this.at, ...context });
  };

  run(): PickleValue {
    while (this.pos < this.bytes.length) {
      this.at = this.pos;
      const op = this.bytes[this.pos++]!;
      if (op === 0x2e) return this.stop();
      this.step(op);
      if (this.stack.length > PICKLE_MAX_STACK) throw new FormatError("HEADER_TOO_LARGE", "pickle stack over the cap", { file: this.file, byteOffset: this.at, expected: `<= ${PICKLE_MAX_STACK}` });
    }
    throw new FormatError("DATA_TRUNCATED", "pickle ends without STOP", { file: this.file, byteOffset: this.bytes.length });
  }

  private step(op: number): void {
    switch (op) {
      case 0x80: { // PROTO
        const version = this.u8();
        if (version < 2 || version > 5) this.fail("LAYOUT_UNKNOWN", "pickle protocol outside 2..5", { expected: "2..5", actual: version });
        return;
      }
      case 0x95: { // FRAME: a buffering hint; the frame must lie inside the program
        const length = this.u64();
        if (length > this.bytes.length - this.pos) this.truncated("FRAME");
        return;
      }
      case 0x7d: return this.push(new Map()); // EMPTY_DICT
      case 0x5d: return this.push([]); // EMPTY_LIST
      case 0x29: return this.push(new PickleTuple([])); // EMPTY_TUPLE
      case 0x28: // MARK
        if (this.marks.length >= PICKLE_MAX_MARK_DEPTH) throw new FormatError("HEADER_TOO_DEEP", "pickle MARKs nested past the cap", { file: this.file, byteOffset: this.at, expected: `<= ${PICKLE_MAX_MARK_DEPTH}` });
        this.marks.push(this.stack.length);
        return;
      case 0x58: return this.push(this.string(this.u32())); // BINUNICODE
      case 0x8c: return this.push(this.string(this.u8())); // SHORT_BINUNICODE
      case 0x8d: return this.push(this.string(this.u64())); // BINUNICODE8
      case 0x4a: return this.push(this.view.getInt32(this.take(4), true)); // BININT
      case 0x4b: return this.push(this.u8()); // BININT1
      case 0x4d: return this.push(this.view.getUint16(this.take(2), true)); // BININT2
      case 0x8a: return this.push(this.long1()); // LONG1
      case 0x47: return this.push(this.view.getFloat64(this.take(8), false)); // BINFLOAT (big-endian)
      case 0x4e: return this.push(null); // NONE
      case 0x88: return this.push(true); // NEWTRUE
      case 0x89: return this.push(false); // NEWFALSE
      case 0x74: return this.push(new PickleTuple(this.popMark())); // TUPLE
      case 0x85: return this.push(new PickleTuple(this.popN(1))); // TUPLE1
      case 0x86: return this.push(new PickleTuple(this.popN(2))); // TUPLE2
      case 0x87: return this.push(new PickleTuple(this.popN(3))); // TUPLE3
      case 0x73: { // SETITEM
        const [key, value] = this.popN(2);
        return this.setItems(this.top(), [key!, value!]);
      }
      case 0x75: { // SETITEMS
        const items = this.popMark();
        return this.setItems(this.top(), items);
      }
      case 0x61: return this.appendTo(this.popN(1)); // APPEND
      case 0x65: return this.appendTo(this.popMark()); // APPENDS
      case 0x71: return this.put(this.u8()); // BINPUT
      case 0x72: return this.put(this.u32()); // LONG_BINPUT
      case 0x94: return this.put(this.memo.size); // MEMOIZE
      case 0x68: return this.get(this.u8()); // BINGET
      case 0x6a: return this.get(this.u32()); // LONG_BINGET
      case 0x63: { // GLOBAL "module\nname\n"
        const module = this.line();
        return this.push(this.global(module, this.line()));
      }
      case 0x93: { // STACK_GLOBAL
        const [module, name] = this.popN(2);
        if (typeof module !== "string" || typeof name !== "string") this.fail("METADATA_INVALID", "STACK_GLOBAL needs two strings");
        return this.push(this.global(module, name));
      }
      case 0x52: { // REDUCE
        const [callable, args] = this.popN(2);
        if (!(callable instanceof PickleGlobal) || !(args instanceof PickleTuple)) return this.fail("METADATA_INVALID", "REDUCE needs a global and an argument tuple");
        const reducer = CALLABLES[callable.qualifiedName];
        if (reducer === undefined) return this.fail("LAYOUT_UNKNOWN", "REDUCE of a global lmpack does not call", { actual: callable.qualifiedName });
        return this.push(reducer(args.items, this.fail));
      }
      case 0x51: return this.push(this.persistent(this.popN(1)[0]!)); // BINPERSID
      default:
        this.fail("LAYOUT_UNKNOWN", `pickle opcode ${opcodeName(op)} is not read by lmpack's restricted unpickler`, { actual: `0x${op.toString(16).padStart(2, "0")}` });
    }
  }

  private stop(): PickleValue {
    if (this.marks.length !== 0 || this.stack.length !== 1) this.fail("METADATA_INVALID", "STOP with open MARKs or more than one value on the stack", { expected: "1 value, no marks", actual: `${this.stack.length} values, ${this.marks.length} marks` });
    if (this.pos !== this.bytes.length) throw new FormatError("TRAILING_BYTES", "bytes after the pickle's STOP", { file: this.file, byteOffset: this.pos, expected: this.pos, actual: this.bytes.length });
    return this.stack[0]!;
  }

  private global(module: string, name: string): PickleGlobal {
    const qualified = `${module}.${name}`;
    if (CALLABLES[qualified] !== undefined) return new PickleGlobal(module, name);
    if (module === STORAGE_MODULE && Object.hasOwn(TORCH_STORAGE_TYPES, name)) return new PickleGlobal(module, name);
    return this.fail("LAYOUT_UNKNOWN", `pickle global "${qualified}" is not on lmpack's allow-list (torch tensors, storages and OrderedDict only); nothing was executed`, { actual: qualified });
  }

  /** torch/serialization.py `_save.persistent_id`: ('storage', storage_type, key, location, numel). */
  private persistent(pid: PickleValue): TorchStorage {
    const items = pid instanceof PickleTuple ? pid.items : [];
    const [tag, type, key, location, numel] = items;
    if (items.length !== 5 || tag !== "storage" || !(type instanceof PickleGlobal) || typeof key !== "string" || typeof location !== "string" || !isCount(numel)) {
      return this.fail("METADATA_INVALID", "persistent id is not ('storage', <storage class>, key, location, numel)");
    }
    const storageType = type.module === STORAGE_MODULE ? TORCH_STORAGE_TYPES[type.name] : undefined;
    if (storageType === undefined) return this.fail("LAYOUT_UNKNOWN", "persistent id names no storage class", { actual: type.qualifiedName });
    if (!/^[A-Za-z0-9_]{1,64}$/.test(key)) this.fail("METADATA_INVALID", "storage key must be a short alphanumeric name", { actual: key });
    const known = this.storages.get(key);
    if (known !== undefined) {
      if (known.dtype !== storageType.dtype || known.numel !== numel) this.fail("METADATA_INVALID", `storage "${key}" referenced twice with different types or sizes`, { expected: `${known.dtype} x ${known.numel}`, actual: `${storageType.dtype} x ${numel}` });
      return known;
    }
    const storage = new TorchStorage(storageType.dtype, storageType.bytes, key, location, numel);
    this.storages.set(key, storage);
    return storage;
  }

  private setItems(target: PickleValue, items: PickleValue[]): void {
    if (!(target instanceof Map)) return this.fail("METADATA_INVALID", "SETITEM(S) on something that is not a dict");
    if (items.length % 2 !== 0) this.fail("METADATA_INVALID", "SETITEMS with an odd number of values");
    for (let i = 0; i < items.length; i += 2) {
      const key = items[i]!;
      if (key !== null && typeof key === "object") this.fail("METADATA_INVALID", "dict keys must be strings, numbers, booleans or None");
      if (target.has(key)) throw new FormatError("DUPLICATE_KEY", "dict key set twice", { file: this.file, byteOffset: this.at, actual: String(key) });
      target.set(key, items[i + 1]!);
    }
  }

  private appendTo(items: PickleValue[]): void {
    const list = this.top();
    if (!Array.isArray(list)) return this.fail("METADATA_INVALID", "APPEND(S) on something that is not a list");
    for (const item of items) list.push(item); // not push(...items): a million-item APPENDS would overflow the call stack
  }

  private put(index: number): void {
    if (this.stack.length === 0) this.fail("METADATA_INVALID", "memo put with an empty stack");
    if (!this.memo.has(index) && this.memo.size >= PICKLE_MAX_MEMO) throw new FormatError("HEADER_TOO_LARGE", "pickle memo over the cap", { file: this.file, byteOffset: this.at, expected: `<= ${PICKLE_MAX_MEMO}` });
    this.memo.set(index, this.stack[this.stack.length - 1]!);
  }

  private get(index: number): void {
    const value = this.memo.get(index);
    if (value === undefined) return this.fail("METADATA_INVALID", "memo get of an index never put", { actual: index });
    this.push(value);
  }

  private push(value: PickleValue): void {
    this.stack.push(value);
  }

  /** The top value, which must lie above the innermost MARK (as in CPython's split stack). */
  private top(): PickleValue {
    if (this.stack.length <= (this.marks[this.marks.length - 1] ?? 0)) return this.fail("METADATA_INVALID", "pickle stack underflow");
    return this.stack[this.stack.length - 1]!;
  }

  private popN(n: number): PickleValue[] {
    if (this.stack.length - n < (this.marks[this.marks.length - 1] ?? 0)) return this.fail("METADATA_INVALID", "pickle stack underflow");
    return this.stack.splice(this.stack.length - n, n);
  }

  private popMark(): PickleValue[] {
    const mark = this.marks.pop();
    if (mark === undefined) return this.fail("METADATA_INVALID", "opcode needs a MARK and there is none");
    return this.stack.splice(mark);
  }

  private take(n: number): number {
    if (n > this.bytes.length - this.pos) this.truncated(opcodeName(this.bytes[this.at]!));
    const at = this.pos;
    this.pos += n;
    return at;
  }

  private u8(): number {
    return this.bytes[this.take(1)]!;
  }

  private u32(): number {
    return this.view.getUint32(this.take(4), true);
  }

  private u64(): number {
    const value = this.view.getBigUint64(this.take(8), true);
    return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
  }

  private long1(): number | bigint {
    const n = this.u8();
    if (n > PICKLE_MAX_LONG_BYTES) this.fail("METADATA_INVALID", "LONG1 integer wider than lmpack reads", { expected: `<= ${PICKLE_MAX_LONG_BYTES} bytes`, actual: n });
    const start = this.take(n);
    let value = 0n;
    for (let i = n - 1; i >= 0; i--) value = (value << 8n) | BigInt(this.bytes[start + i]!);
    if (n > 0 && this.bytes[start + n - 1]! >= 0x80) value -= 1n << BigInt(8 * n);
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }

  private string(length: number): string {
    if (length > PICKLE_MAX_STRING_BYTES) throw new FormatError("HEADER_TOO_LARGE", "pickle string over the cap", { file: this.file, byteOffset: this.at, expected: `<= ${PICKLE_MAX_STRING_BYTES} bytes`, actual: length });
    const start = this.take(length);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(this.bytes.subarray(start, start + length));
    } catch {
      return this.fail("METADATA_INVALID", "pickle string is not valid UTF-8");
    }
  }

  /** GLOBAL's newline-terminated names: Python identifiers joined by dots. */
  private line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) return this.truncated("GLOBAL");
    if (end - this.pos > 256) this.fail("METADATA_INVALID", "GLOBAL name longer than 256 bytes", { actual: end - this.pos });
    const text = String.fromCharCode(...this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(text)) this.fail("METADATA_INVALID", "GLOBAL name is not a dotted identifier", { actual: JSON.stringify(text) });
    return text;
  }

  private truncated(what: string): never {
    throw new FormatError("DATA_TRUNCATED", `pickle ends inside ${what}`, { file: this.file, byteOffset: this.at, actual: `${this.bytes.length} bytes` });
  }
}

/** torch/_utils.py `_rebuild_tensor_v2`: a view (offset, sizes, strides in elements) of a storage. */
function rebuildTensorV2(args: readonly PickleValue[], fail: Fail): TorchTensor {
  const [storage, offset, size, stride, requiresGrad, hooks, metadata] = args;
  if ((args.length !== 6 && args.length !== 7) || !(storage instanceof TorchStorage) || !isCount(offset) || !(size instanceof PickleTuple) || !(stride instanceof PickleTuple) || typeof requiresGrad !== "boolean" || !isEmptyMap(hooks)) {
    return fail("METADATA_INVALID", "_rebuild_tensor_v2 expects (storage, offset, size tuple, stride tuple, bool, empty OrderedDict)");
  }
  if (args.length === 7 && metadata !== null && !isEmptyMap(metadata)) fail("LAYOUT_UNKNOWN", "tensor with Python attributes (_rebuild_tensor_v2 metadata) is not read");
  const shape = size.items;
  const strides = stride.items;
  if (shape.length > TORCH_MAX_RANK || shape.length !== strides.length || !shape.every(isCount) || !strides.every(isCount)) {
    return fail("METADATA_INVALID", `tensor size and stride must be tuples of equal length (<= ${TORCH_MAX_RANK}) of non-negative integers`, { actual: `size ${shape.length}, stride ${strides.length}` });
  }
  // Exact in doubles as long as every term stays below 2^53, which each check before the sum ensures.
  let numel = 1;
  let last = offset;
  for (let d = 0; d < shape.length; d++) {
    numel *= shape[d]!;
    if (!Number.isSafeInteger(numel)) fail("SHAPE_SIZE_MISMATCH", "tensor element count beyond 2^53");
  }
  if (numel > 0) for (let d = 0; d < shape.length; d++) last += (shape[d]! - 1) * strides[d]!;
  if (numel > 0 && (!Number.isSafeInteger(last) || last >= storage.numel)) {
    fail("SHAPE_SIZE_MISMATCH", `tensor view reaches past its storage "${storage.key}"`, { expected: `last element < ${storage.numel}`, actual: last });
  }
  return new TorchTensor(storage, offset, shape, strides);
}

/**
 * The tensor's elements in row-major order as float64, read through its offset and strides.
 * `storageBytes` must be the whole storage: exactly numel × element size bytes.
 */
export function tensorToFloat64(tensor: TorchTensor, storageBytes: Uint8Array, where: { file: string; tensor: string }): Float64Array {
  const { storage } = tensor;
  const expected = storage.numel * storage.elementBytes;
  if (storageBytes.length !== expected) {
    const code = storageBytes.length < expected ? "DATA_TRUNCATED" : "TRAILING_BYTES";
    throw new FormatError(code, `storage "${storage.key}" does not hold numel × ${storage.elementBytes} bytes`, { ...where, expected: `${expected} bytes (${storage.numel} x ${storage.dtype})`, actual: `${storageBytes.length} bytes` });
  }
  const bytes = storageBytes.byteOffset % 8 === 0 ? storageBytes : storageBytes.slice();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float64Array(tensor.numel);
  if (out.length === 0) return out;
  const { dtype } = storage;
  if (isContiguous(tensor) && (dtype === "F32" || dtype === "F64")) {
    const start = bytes.byteOffset + tensor.storageOffset * storage.elementBytes;
    out.set(dtype === "F32" ? new Float32Array(bytes.buffer, start, out.length) : new Float64Array(bytes.buffer, start, out.length));
    return out;
  }
  let read: (element: number) => number;
  if (dtype === "F32") read = (e) => view.getFloat32(e * 4, true);
  else if (dtype === "F64") read = (e) => view.getFloat64(e * 8, true);
  else if (dtype === "F16" || dtype === "BF16") {
    const values = halfPrecisionValues(dtype);
    read = (e) => values[view.getUint16(e * 2, true)]!;
  } else {
    throw new FormatError("DTYPE_UNSUPPORTED", "expected a floating-point tensor", { ...where, expected: "F64|F32|F16|BF16", actual: dtype });
  }
  const rank = tensor.shape.length;
  const index = new Array<number>(rank).fill(0);
  let element = tensor.storageOffset;
  for (let i = 0; i < out.length; i++) {
    out[i] = read(element);
    for (let d = rank - 1; d >= 0; d--) {
      element += tensor.stride[d]!;
      if (++index[d]! < tensor.shape[d]!) break;
      element -= tensor.stride[d]! * tensor.shape[d]!;
      index[d] = 0;
    }
  }
  return out;
}

function isContiguous(tensor: TorchTensor): boolean {
  let expected = 1;
  for (let d = tensor.shape.length - 1; d >= 0; d--) {
    if (tensor.shape[d] !== 1 && tensor.stride[d] !== expected) return false;
    expected *= tensor.shape[d]!;
  }
  return true;
}

function isCount(value: PickleValue | undefined): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function isEmptyMap(value: PickleValue | undefined): boolean {
  return value instanceof Map && value.size === 0;
}

/** pickletools' names, so an error says which opcode it met (the first block is what lmpack reads). */
const OPCODE_NAMES: Record<number, string> = {
  0x80: "PROTO", 0x95: "FRAME", 0x7d: "EMPTY_DICT", 0x5d: "EMPTY_LIST", 0x29: "EMPTY_TUPLE", 0x28: "MARK", 0x58: "BINUNICODE",
  0x8c: "SHORT_BINUNICODE", 0x8d: "BINUNICODE8", 0x4a: "BININT", 0x4b: "BININT1", 0x4d: "BININT2", 0x8a: "LONG1", 0x47: "BINFLOAT",
  0x4e: "NONE", 0x88: "NEWTRUE", 0x89: "NEWFALSE", 0x74: "TUPLE", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3", 0x73: "SETITEM",
  0x75: "SETITEMS", 0x61: "APPEND", 0x65: "APPENDS", 0x71: "BINPUT", 0x72: "LONG_BINPUT", 0x94: "MEMOIZE", 0x68: "BINGET",
  0x6a: "LONG_BINGET", 0x63: "GLOBAL", 0x93: "STACK_GLOBAL", 0x52: "REDUCE", 0x51: "BINPERSID", 0x2e: "STOP",

  0x62: "BUILD", 0x69: "INST", 0x6f: "OBJ", 0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4",
  0x50: "PERSID", 0x53: "STRING", 0x55: "SHORT_BINSTRING", 0x54: "BINSTRING", 0x56: "UNICODE", 0x49: "INT", 0x4c: "LONG",
  0x46: "FLOAT", 0x8b: "LONG4", 0x42: "BINBYTES", 0x43: "SHORT_BINBYTES", 0x8e: "BINBYTES8", 0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER", 0x98: "READONLY_BUFFER", 0x64: "DICT", 0x6c: "LIST", 0x30: "POP", 0x31: "POP_MARK", 0x32: "DUP",
  0x67: "GET", 0x70: "PUT", 0x8f: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET",
};

function opcodeName(op: number): string {
  const hex = `0x${op.toString(16).padStart(2, "0")}`;
  const name = OPCODE_NAMES[op];
  return name === undefined ? `${hex} (unknown)` : `${name} (${hex})`;
}
