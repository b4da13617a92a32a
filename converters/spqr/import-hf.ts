import { FormatError } from "../../formats/errors.js";
import { unpackHfSpqr } from "../../formats/spqr/hf-layout.js";
import { SPQR_DEFAULTS } from "../../formats/spqr/types.js";
import type { PackedArray } from "../../formats/packed-array.js";
import type { PackedSpqr, TensorEntry } from "../checkpoint.js";
import { spqrEntry } from "./entry.js";
import { SPQR_ARRAYS, type HfSpqrConfig } from "./hf-config.js";

/**
 * Replaces each SpQR linear's four stored arrays (`<m>.dense_weights`, `.row_offsets`,
 * `.col_vals`, `.in_perm`) with one spqr entry `<m>.weight` at dense_weights' place. The shape
 * comes from the headers: n = 2·len(in_perm), m = 16·len(dense_weights)/n, and row_offsets'
 * length must then be m+1 (CSR) or m/16+1 (PTCSR); the config's `shapes` must agree. The
 * arrays are read and fully validated (hf-layout.ts) only when an exporter asks; a PTCSR
 * layer's col_vals is read up front to count its outliers (padding is not one).
 */
export async function groupSpqrLayers(tensors: readonly TensorEntry[], config: HfSpqrConfig, configFile: string): Promise<TensorEntry[]> {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const consumed = new Set<string>();
  const replacement = new Map<string, TensorEntry>();
  for (const dense of tensors.filter((t) => t.name.endsWith(".dense_weights"))) {
    const module = dense.name.slice(0, -".dense_weights".length);
    if (config.modulesToNotConvert.includes(`${module}.weight`)) throw new FormatError("QUANT_CONFIG_INVALID", "modules_to_not_convert lists this module, but it is stored packed", { file: dense.file, tensor: dense.name });
    const parts = Object.fromEntries(SPQR_ARRAYS.map((a) => {
      const entry = byName.get(`${module}.${a}`);
      if (entry === undefined) throw new FormatError("TENSOR_MISSING", `SpQR linear "${module}" has dense_weights but no ${a}`, { file: dense.file, tensor: `${module}.${a}` });
      return [a, entry];
    })) as Record<(typeof SPQR_ARRAYS)[number], TensorEntry>;
    for (const a of SPQR_ARRAYS) {
      const declared = config.shapes[`${module}.${a}.shape`];
      const actual = parts[a].shape.length === 1 ? parts[a].shape[0] : undefined;
      if (declared !== undefined && declared !== actual) throw new FormatError("QUANT_CONFIG_INVALID", `config shapes["${module}.${a}.shape"] disagrees with the stored tensor`, { file: configFile, tensor: parts[a].name, expected: declared, actual: `[${parts[a].shape.join(", ")}]` });
      consumed.add(parts[a].name);
    }
    const { m, n } = geometry(parts);
    const headers = (bytes: Record<string, Uint8Array>) =>
      Object.fromEntries(SPQR_ARRAYS.map((a) => {
        const e = parts[a];
        const array: PackedArray = { name: e.name, dtype: e.dtype, shape: e.shape, bytes: bytes[a]!, file: e.file, ...(e.byteOffset === undefined ? {} : { byteOffset: e.byteOffset }) };
        return [a, array];
      }));
    const load = async () => {
      const bytes = Object.fromEntries(await Promise.all(SPQR_ARRAYS.map(async (a) => [a, await parts[a].read()] as const)));
      const arrays = headers(bytes);
      return unpackHfSpqr({ denseWeights: arrays["dense_weights"]!, rowOffsets: arrays["row_offsets"]!, colVals: arrays["col_vals"]!, inPerm: arrays["in_perm"]! }, m, n);
    };
    const storedBytes = SPQR_ARRAYS.reduce((sum, a) => sum + parts[a].byteLength, 0);
    const packed: PackedSpqr = { representation: "spqr", params: SPQR_DEFAULTS, outFeatures: m, inFeatures: n, outlierCount: await outlierCount(parts, m), storedBytes, sourceLayout: "hf-spqr", load };
    replacement.set(dense.name, spqrEntry(`${module}.weight`, dense.file, packed, { sourceLayout: "hf-spqr" }));
  }
  return tensors.flatMap((t) => replacement.get(t.name) ?? (consumed.has(t.name) ? [] : [t]));
}

/** CSR: the col_vals length. PTCSR pads with zero words, so its (small) col_vals is read and counted. */
async function outlierCount(parts: Record<(typeof SPQR_ARRAYS)[number], TensorEntry>, m: number): Promise<number> {
  if (parts.row_offsets.shape[0] === m + 1) return parts.col_vals.nElements;
  const bytes = await parts.col_vals.read();
  let count = 0;
  for (let i = 0; i + 4 <= bytes.length; i += 4) if ((bytes[i]! | bytes[i + 1]! | bytes[i + 2]! | bytes[i + 3]!) !== 0) count++;
  return count;
}

function geometry(parts: Record<(typeof SPQR_ARRAYS)[number], TensorEntry>): { m: number; n: number } {
  const where = (t: TensorEntry) => ({ file: t.file, tensor: t.name, byteOffset: t.byteOffset });
  const inPerm = parts.in_perm;
  const dense = parts.dense_weights;
  const rowOffsets = parts.row_offsets;
  if (inPerm.shape.length !== 1 || inPerm.shape[0]! < 8) throw new FormatError("PACKED_SHAPE_MISMATCH", "in_perm must be I32 [in/2] (an empty in_perm, the identity, is not supported)", { ...where(inPerm), actual: `[${inPerm.shape.join(", ")}]` });
  const n = 2 * inPerm.shape[0]!;
  const words = dense.shape.length === 1 ? dense.shape[0]! : -1;
  const m = (16 * words) / n;
  if (!Number.isInteger(m) || m < 16 || m % 16 !== 0 || n % 16 !== 0) throw new FormatError("PACKED_SHAPE_MISMATCH", `dense_weights must hold (m/16)·(n/16)·16 words for in_features ${n}`, { ...where(dense), expected: "a multiple of n", actual: `[${dense.shape.join(", ")}]` });
  const rows = rowOffsets.shape.length === 1 ? rowOffsets.shape[0]! : -1;
  if (rows !== m + 1 && rows !== m / 16 + 1) throw new FormatError("PACKED_SHAPE_MISMATCH", "row_offsets length is neither m+1 (CSR) nor m/16+1 (PTCSR)", { ...where(rowOffsets), expected: `${m + 1} or ${m / 16 + 1}`, actual: `[${rowOffsets.shape.join(", ")}]` });
  return { m, n };
}
