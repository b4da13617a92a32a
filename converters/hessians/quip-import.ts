import { readdir, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { FormatError, UsageError } from "../../formats/errors.js";
import type { Hessian, HessianSource } from "../../formats/second-order/hessian.js";
import { FileSource, type RandomAccessSource } from "../io/random-access.js";
import { PickleTuple, TorchTensor, tensorToFloat64, unpickle, type PickleValue } from "../torch/pickle.js";
import { ZipArchive } from "../torch/zip.js";
import { HESSIAN_FILE, type HessianEntry } from "./store.js";

/**
 * Hessian sets in the form QuIP# publishes them, which VPTQ and its Hessian collector reuse: one
 * `torch.save` file per layer input, holding
 *
 *   { "flatH": f32 [K(K+1)/2]  lower triangle of C, row-major (torch.tril_indices order:
 *                              (0,0), (1,0), (1,1), (2,0), ...; the same numbers as the upper
 *                              triangle column-major),
 *     "mu":    f32 [K]         mean input E[x],
 *     "n":     int             K (not a sample count: QuIP#'s loaders call flat_to_sym(flatH, n)),
 *     "ct":    int             calibration tokens }
 *
 * where C = E[xxᵀ] − μμᵀ, the centred covariance. Cornell-RelaxML/quip-sharp
 * quantize_llama/hessian_offline_llama.py `accumulate()` (b22288c): `mus[key].div_(cts[key])`,
 * `Hs[key].div_(cts[key])`, `Hs[key].addmm_(-mus[key].unsqueeze(-1), mus[key].unsqueeze(0))`,
 * then saves `utils.sym_to_flat(Hs[key].to(torch.float32))`; lib/utils/data_utils.py `sym_to_flat`
 * takes `A[torch.tril_indices(N, N)]`. Every consumer adds μμᵀ back before quantizing
 * (QuIP# `H.add_(mu[None, :] * mu[:, None])`; microsoft/VPTQ vptq/utils/hessian.py
 * `basic_preprocess`), so lmpack does the same: H = C + μμᵀ = E[xxᵀ] = XᵀX / ct, the
 * uncentred second moment its quantizers take (they are invariant to the 1/ct factor), in
 * float64, with nSamples = ct. A file without "mu" is taken as already uncentred.
 *
 * File names say which linears read the input. QuIP#'s script (and VPTQ/hessian_collector's
 * hessian_collector.py) write `<layer>_<qkv|o|up|down>.pt`, hooked on q_proj, o_proj, up_proj and
 * down_proj; VPTQ's layer_quantizer.py `name2hessian` maps q/k/v → qkv, o → o, gate/up → up,
 * down → down. VPTQ/hessian_collector's llm_hessian_collector.py writes `<linear name>.pt`,
 * one file per linear. Both are read; other files in the directory (dev_activations.pt, READMEs)
 * are ignored.
 *
 * Caution: VPTQ/hessian_collector's deepseek_hessian_collector.py saves the same keys without
 * dividing by ct or centring (raw sums Σxxᵀ and Σx); the files do not say which, and lmpack
 * reads every file by QuIP#'s definition, as VPTQ's loader does.
 */

/** Widest layer input accepted: above any released model's (Llama-3.1-405B down_proj: 53,248); H alone is K² × 8 bytes. */
export const QUIP_MAX_SIZE = 65_536;
/** data.pkl bytes: a Hessian file's is ~250 bytes; a whole state dict's stays under a few MB. */
export const TORCH_MAX_PICKLE_BYTES = 16 * 1024 * 1024;

/** The first bytes of the pre-1.6 (non-ZIP) torch.save format: pickled MAGIC_NUMBER 0x1950a86a20f9469cfc6c. */
const TORCH_LEGACY_MAGIC = Uint8Array.of(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19);
const LAYER_FILE = /^(0|[1-9][0-9]{0,5})_(qkv|o|up|down)\.pt$/;
const LINEAR_FILE = /^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)\.pt$/;

export interface QuipHessianFile {
  path: string;
  /** lmpack's stored name (the first linear reading the input) and the others that share it. */
  name: string;
  aliases: string[];
  /** QuIP#'s key ("qkv", "o", "up", "down") or undefined for a per-linear file. */
  key: string | undefined;
  size: number;
  nSamples: number | undefined;
}

/** True when `spec` is a .pt file, or a directory of QuIP#-named .pt files without an lmpack store. */
export async function isQuipHessianSpec(spec: string): Promise<boolean> {
  const info = await stat(spec).catch(() => undefined);
  if (info?.isFile()) return spec.endsWith(".pt");
  if (!info?.isDirectory()) return false;
  const names = await readdir(spec);
  return !names.includes(HESSIAN_FILE) && names.some((n) => linearsFor(n) !== undefined);
}

/**
 * Opens a QuIP#-form file or directory as a HessianSource. Every file's ZIP directory, pickle,
 * keys, shapes and storage sizes are checked here, before any quantizer runs; the K×K matrices are
 * built one at a time on `get` (the last one is kept, as q/k/v and gate/up ask for it in turn).
 */
export async function openQuipHessians(spec: string): Promise<HessianSource & { files: QuipHessianFile[]; close(): Promise<void> }> {
  const files = await scanQuipHessians(spec);
  const byLinear = new Map<string, QuipHessianFile>();
  for (const f of files) for (const linear of [f.name, ...f.aliases]) {
    const other = byLinear.get(linear);
    if (other !== undefined) throw new FormatError("DUPLICATE_KEY", `two Hessian files for one linear (also ${other.path})`, { file: f.path, tensor: linear });
    byLinear.set(linear, f);
  }
  let cached: { path: string; hessian: Hessian } | undefined;
  return {
    files,
    async get(linearName: string, inFeatures: number): Promise<Hessian | undefined> {
      const f = byLinear.get(linearName);
      if (f === undefined) return undefined;
      if (f.size !== inFeatures) throw new FormatError("SHAPE_INVALID", `Hessian for "${linearName}" must be [${inFeatures}, ${inFeatures}]`, { file: f.path, tensor: "flatH", expected: `K = ${inFeatures}`, actual: `K = ${f.size}` });
      if (cached?.path !== f.path) cached = { path: f.path, hessian: await readQuipHessianFile(f.path) };
      return cached.hessian;
    },
    close: async () => {
      cached = undefined;
    },
  };
}

/** Reads a whole QuIP#-form file or directory into store entries (for `writeHessianStore`). */
export async function importQuipHessians(spec: string): Promise<HessianEntry[]> {
  const files = await scanQuipHessians(spec);
  const entries: HessianEntry[] = [];
  for (const f of files) entries.push({ name: f.name, aliases: f.aliases, hessian: await readQuipHessianFile(f.path) });
  return entries;
}

/** One file's contents as QuIP# defines them, in float64. */
export interface QuipHessianRecord {
  size: number;
  /** flat_to_sym(flatH, n): the stored (centred) matrix, K×K row-major. */
  stored: Float64Array;
  mu: Float64Array | undefined;
  nSamples: number | undefined;
}

/** Reads one torch.save file (a path, or any source: tests pass buffers) without interpreting it beyond QuIP#'s keys. */
export async function readQuipRecord(file: string | RandomAccessSource): Promise<QuipHessianRecord> {
  const torch = await TorchSaveFile.open(file);
  try {
    const record = quipRecord(torch.root, torch.path);
    const flat = await torch.floats(record.flatH, "flatH");
    const mu = record.mu === undefined ? undefined : await torch.floats(record.mu, "mu");
    for (const [name, values] of [["flatH", flat], ["mu", mu ?? new Float64Array(0)]] as const) {
      const bad = values.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) throw new FormatError("METADATA_INVALID", "non-finite value in the Hessian", { file: torch.path, tensor: name, actual: `element ${bad} = ${values[bad]}` });
    }
    const K = record.size;
    const stored = new Float64Array(K * K);
    for (let i = 0, t = 0; i < K; i++) {
      for (let j = 0; j <= i; j++, t++) {
        stored[i * K + j] = flat[t]!;
        stored[j * K + i] = flat[t]!;
      }
    }
    return { size: K, stored, mu, nSamples: record.nSamples };
  } finally {
    await torch.close();
  }
}

/** One file's H = flat_to_sym(flatH, n) + μμᵀ (QuIP#'s `H.add_(mu[None, :] * mu[:, None])`, same rounding), float64, row-major. */
export async function readQuipHessianFile(file: string | RandomAccessSource): Promise<Hessian> {
  const { size: K, stored, mu, nSamples } = await readQuipRecord(file);
  if (mu !== undefined) for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) stored[i * K + j]! += mu[j]! * mu[i]!;
  return { size: K, data: stored, ...(nSamples === undefined ? {} : { nSamples }) };
}

async function scanQuipHessians(spec: string): Promise<QuipHessianFile[]> {
  const info = await stat(spec).catch(() => undefined);
  let paths: string[];
  if (info?.isDirectory()) {
    paths = (await readdir(spec)).filter((n) => linearsFor(n) !== undefined).sort(byLayerThenName).map((n) => join(spec, n));
    if (paths.length === 0) throw new UsageError("BAD_SOURCE", "no Hessian files here: expected <layer>_<qkv|o|up|down>.pt or <linear name>.pt", { file: spec });
  } else if (info?.isFile()) {
    if (linearsFor(basename(spec)) === undefined) throw new UsageError("BAD_SOURCE", "cannot tell which linears this Hessian belongs to: name it <layer>_<qkv|o|up|down>.pt (QuIP#) or <linear name>.pt", { file: spec });
    paths = [spec];
  } else {
    throw new UsageError("BAD_SOURCE", "no such Hessian file or directory", { file: spec });
  }
  const files: QuipHessianFile[] = [];
  for (const path of paths) {
    const torch = await TorchSaveFile.open(path);
    try {
      const record = quipRecord(torch.root, path);
      for (const t of [record.flatH, record.mu]) if (t !== undefined) torch.storageEntry(t, t === record.flatH ? "flatH" : "mu");
      const linears = linearsFor(basename(path))!;
      files.push({ path, ...linears, size: record.size, nSamples: record.nSamples });
    } finally {
      await torch.close();
    }
  }
  checkSharedSizes(files);
  return files;
}

/** q/k/v and gate/up read the same hidden state, and a key has one width in every layer. */
function checkSharedSizes(files: QuipHessianFile[]): void {
  const widths = new Map<string, QuipHessianFile>();
  for (const f of files) {
    if (f.key === undefined) continue;
    const group = f.key === "up" ? "qkv" : f.key;
    const first = widths.get(group);
    if (first === undefined) widths.set(group, f);
    else if (first.size !== f.size) throw new FormatError("SHAPE_INVALID", `Hessian width differs from ${basename(first.path)}'s (both read ${group === "qkv" ? "the hidden state" : `"${group}" inputs`})`, { file: f.path, tensor: "flatH", expected: `K = ${first.size}`, actual: `K = ${f.size}` });
  }
}

function linearsFor(fileName: string): { name: string; aliases: string[]; key: string | undefined } | undefined {
  const layer = LAYER_FILE.exec(fileName);
  if (layer !== null) {
    const p = `model.layers.${layer[1]}`;
    const key = layer[2]!;
    if (key === "qkv") return { name: `${p}.self_attn.q_proj`, aliases: [`${p}.self_attn.k_proj`, `${p}.self_attn.v_proj`], key };
    if (key === "o") return { name: `${p}.self_attn.o_proj`, aliases: [], key };
    if (key === "up") return { name: `${p}.mlp.gate_proj`, aliases: [`${p}.mlp.up_proj`], key };
    return { name: `${p}.mlp.down_proj`, aliases: [], key };
  }
  const linear = LINEAR_FILE.exec(fileName);
  return linear === null ? undefined : { name: linear[1]!, aliases: [], key: undefined };
}

function byLayerThenName(a: string, b: string): number {
  const la = LAYER_FILE.exec(a);
  const lb = LAYER_FILE.exec(b);
  if (la !== null && lb !== null && la[1] !== lb[1]) return Number(la[1]) - Number(lb[1]);
  return a < b ? -1 : a > b ? 1 : 0;
}

interface QuipRecord {
  size: number;
  flatH: TorchTensor;
  mu: TorchTensor | undefined;
  nSamples: number | undefined;
}

function quipRecord(root: PickleValue, file: string): QuipRecord {
  if (!(root instanceof Map)) throw new FormatError("METADATA_INVALID", "a QuIP# Hessian file holds a dict", { file, expected: "dict", actual: kind(root) });
  const flatH = root.get("flatH");
  const n = root.get("n");
  const mu = root.get("mu");
  const ct = root.get("ct");
  if (!(flatH instanceof TorchTensor)) throw new FormatError("TENSOR_MISSING", 'no "flatH" tensor: not a QuIP#-form Hessian file', { file, tensor: "flatH", actual: kind(flatH) });
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 1 || n > QUIP_MAX_SIZE) throw new FormatError("METADATA_INVALID", `"n" must be the Hessian width, an integer in 1..${QUIP_MAX_SIZE}`, { file, tensor: "n", actual: String(n) });
  const triangle = (n * (n + 1)) / 2;
  if (flatH.shape.length !== 1 || flatH.numel !== triangle) throw new FormatError("SHAPE_SIZE_MISMATCH", "flatH must be the n(n+1)/2 lower-triangle elements", { file, tensor: "flatH", expected: `[${triangle}] (n = ${n})`, actual: `[${flatH.shape.join(", ")}]` });
  if (mu !== undefined && (!(mu instanceof TorchTensor) || mu.shape.length !== 1 || mu.numel !== n)) throw new FormatError("SHAPE_SIZE_MISMATCH", "mu must be a [n] tensor", { file, tensor: "mu", expected: `[${n}]`, actual: mu instanceof TorchTensor ? `[${mu.shape.join(", ")}]` : kind(mu) });
  if (ct !== undefined && (typeof ct !== "number" || !Number.isSafeInteger(ct) || ct < 1)) throw new FormatError("METADATA_INVALID", '"ct" must be a positive token count', { file, tensor: "ct", actual: String(ct) });
  return { size: n, flatH, mu, nSamples: ct };
}

function kind(value: PickleValue | undefined): string {
  if (value === undefined) return "nothing";
  if (value === null) return "None";
  if (value instanceof Map) return "dict";
  if (value instanceof PickleTuple) return "tuple";
  if (Array.isArray(value)) return "list";
  if (typeof value === "object") return value.constructor.name;
  return typeof value;
}

/** A `torch.save` (≥ 1.6) ZIP archive: `<archive>/data.pkl`, `<archive>/data/<key>` storages, `byteorder`, `version`. */
class TorchSaveFile {
  private constructor(readonly path: string, private readonly zip: ZipArchive, private readonly prefix: string, readonly root: PickleValue) {}

  static async open(file: string | RandomAccessSource): Promise<TorchSaveFile> {
    const source = typeof file === "string" ? await FileSource.open(file) : file;
    const path = source.name;
    try {
      if (source.byteLength >= TORCH_LEGACY_MAGIC.length) {
        const head = await source.read(0, TORCH_LEGACY_MAGIC.length);
        if (head.every((b, i) => b === TORCH_LEGACY_MAGIC[i])) throw new FormatError("LAYOUT_UNKNOWN", "legacy (pre-1.6, non-ZIP) torch.save format is not read; re-save it with a current torch", { file: path, byteOffset: 0 });
      }
      const zip = await ZipArchive.open(source);
      const pickles = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
      if (pickles.length !== 1) throw new FormatError("TENSOR_MISSING", "not a torch.save archive: expected exactly one <archive>/data.pkl", { file: path, expected: 1, actual: pickles.length });
      const prefix = pickles[0]!.slice(0, -"/data.pkl".length);
      const stray = [...zip.entries.keys()].find((n) => !n.startsWith(`${prefix}/`));
      if (stray !== undefined) throw new FormatError("CONTAINER_HEADER_INVALID", `torch.save entries must all sit under "${prefix}/"`, { file: path, tensor: stray });
      const order = zip.entry(`${prefix}/byteorder`);
      if (order !== undefined) {
        const text = new TextDecoder().decode(await zip.read(order));
        if (text !== "little") throw new FormatError("LAYOUT_UNKNOWN", "only little-endian torch.save archives are read", { file: path, tensor: order.name, expected: "little", actual: text.slice(0, 16) });
      }
      const pkl = zip.entry(pickles[0]!)!;
      if (pkl.size > TORCH_MAX_PICKLE_BYTES) throw new FormatError("HEADER_TOO_LARGE", "data.pkl over the cap", { file: path, tensor: pkl.name, expected: `<= ${TORCH_MAX_PICKLE_BYTES} bytes`, actual: pkl.size });
      return new TorchSaveFile(path, zip, prefix, unpickle(await zip.read(pkl), `${path}!/${pkl.name}`));
    } catch (error) {
      await source.close();
      throw error;
    }
  }

  /** The storage's ZIP entry, its size checked against numel × element size (nothing is read). */
  storageEntry(tensor: TorchTensor, key: string) {
    const { storage } = tensor;
    const entry = this.zip.entry(`${this.prefix}/data/${storage.key}`);
    if (entry === undefined) throw new FormatError("TENSOR_MISSING", `storage "${storage.key}" has no data/${storage.key} entry`, { file: this.path, tensor: key });
    const expected = storage.numel * storage.elementBytes;
    if (entry.size !== expected) {
      throw new FormatError(entry.size < expected ? "DATA_TRUNCATED" : "TRAILING_BYTES", `storage "${storage.key}" entry does not hold numel × ${storage.elementBytes} bytes`, { file: this.path, tensor: key, byteOffset: entry.dataOffset, expected: `${expected} bytes (${storage.numel} x ${storage.dtype})`, actual: `${entry.size} bytes` });
    }
    return entry;
  }

  async floats(tensor: TorchTensor, key: string): Promise<Float64Array> {
    return tensorToFloat64(tensor, await this.zip.read(this.storageEntry(tensor, key)), { file: this.path, tensor: key });
  }

  close(): Promise<void> {
    return this.zip.close();
  }
}
