import type { Stats } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { ioErrorFor } from "../io/random-access.js";
import { openCheckpoint, readHead } from "../open.js";
import { GGUF_MAGIC } from "../gguf/layout.js";
import { MAGIC } from "../lmpack/layout.js";
import { checkNameClaims } from "./claims.js";
import { checkDequantized, scanArrays } from "./deep.js";
import { Findings, type Finding } from "./findings.js";
import { validateGguf } from "./gguf.js";
import { validateHfDirectory } from "./hf-dir.js";
import { validateLmpack } from "./lmpack.js";
import { validateOnnx } from "./onnx.js";
import { checkedEntries, checkSafetensorsFile } from "./safetensors.js";
import { checkSha256Sums } from "./sums.js";
import type { ScanArray, Validated } from "./types.js";

export type { Finding, FindingCode, Severity, ValidateOnlyCode } from "./findings.js";

/**
 * `lmpack validate`: every layout lmpack reads, checked for every problem rather than the first.
 * Structural checks always (headers, shapes, dtypes, config ↔ tensors both ways, offsets and
 * indices in range, CSR offsets monotone, permutations, checksums: the container's and a
 * SHA256SUMS file's); with `deep`, numeric checks
 * (non-finite or degenerate scales, codebooks, outliers and weights; dequantized layers against
 * `base`; bit widths the names claim). Findings carry file, tensor and byte offset.
 */

export interface ValidateOptions {
  deep?: boolean;
  /** A dense checkpoint the validated one was made from (implies deep for the comparison). */
  base?: string;
  /** Relative RMS error above which a dequantized layer is reported against the base (default verify's 0.8). */
  maxRelativeRms?: number;
}

export interface ValidateReport {
  ok: boolean;
  /** Detected layout: "hf-safetensors", "safetensors", "lmpack", "gguf", "onnx", or "unknown". */
  layout: string;
  /** Tensors and stored arrays that were checked (after grouping packed layers). */
  tensorsChecked: number;
  /**
   * True storage cost of the packed linears that passed: every stored array (codes, scales,
   * zeros, codebooks, outliers...) in bits over their weights; absent when none are packed.
   */
  packedBitsPerWeight?: number;
  findings: Finding[];
}

export async function validatePath(path: string, options: ValidateOptions = {}): Promise<ValidateReport> {
  const findings = new Findings();
  const deep = options.deep === true || options.base !== undefined;
  const validated = await structural(path, findings, deep);
  try {
    if (validated.layout !== "unknown") await checkSha256Sums(path, (await stat(path)).isDirectory(), findings);
    if (deep) {
      await scanArrays(validated.arrays, findings);
      const base = options.base === undefined ? undefined : await openCheckpoint(options.base);
      try {
        await checkDequantized(validated.entries, findings, { base, ...(options.maxRelativeRms === undefined ? {} : { maxRelativeRms: options.maxRelativeRms }) });
      } finally {
        await base?.close();
      }
      checkNameClaims(path, validated.declared, findings);
    }
  } finally {
    await validated.close();
  }
  const packed = validated.entries.filter((e) => e.packed !== undefined);
  const weights = packed.reduce((sum, e) => sum + e.nElements, 0);
  const bits = packed.reduce((sum, e) => sum + 8 * e.packed!.storedBytes, 0);
  return {
    ok: findings.errorCount === 0,
    layout: validated.layout,
    tensorsChecked: validated.checked ?? validated.entries.length,
    ...(weights === 0 ? {} : { packedBitsPerWeight: bits / weights }),
    findings: findings.list,
  };
}

/** Dispatch by content: lmpack and GGUF magics, .onnx, safetensors; folders by what they hold. */
async function structural(path: string, findings: Findings, deep: boolean): Promise<Validated> {
  const none: Validated = { layout: "unknown", entries: [], arrays: [], close: async () => undefined };
  let stats: Stats;
  try {
    stats = await stat(path);
  } catch (cause) {
    findings.fromError(ioErrorFor(cause, path, "cannot read (validate reads local files; download a Hub model first)"), { file: path });
    return none;
  }
  if (stats.isDirectory()) {
    const names = await readdir(path);
    const onnxOnly = names.some((n) => n.endsWith(".onnx")) && !names.includes("config.json") && !names.some((n) => n.endsWith(".safetensors"));
    return onnxOnly ? validateOnnx(path, findings) : validateHfDirectory(path, findings, deep);
  }
  const head = await readHead(path);
  // The extension decides when the magic is the defect (a flipped first byte is still reported as such).
  if (MAGIC.every((b, i) => head[i] === b) || path.endsWith(".lmpack")) return validateLmpack(path, findings);
  if (GGUF_MAGIC.every((b, i) => head[i] === b) || path.endsWith(".gguf")) return validateGguf(path, findings, deep);
  if (path.endsWith(".onnx")) return validateOnnx(path, findings);
  if (path.endsWith(".safetensors") || (head.length === 9 && head[8] === 0x7b)) {
    const checked = await checkSafetensorsFile(path, findings);
    if (checked === undefined) return { ...none, layout: "safetensors" };
    const entries = checkedEntries(checked);
    const arrays: ScanArray[] = entries
      .filter((e) => e.dtype === "F32" || e.dtype === "F16" || e.dtype === "BF16" || e.dtype === "F64")
      .map((e) => ({ name: e.name, file: path, dtype: e.dtype, byteOffset: e.byteOffset!, byteLength: e.byteLength, role: "weight", source: checked.source }));
    return { layout: "safetensors", entries, arrays, declared: { method: "dense" }, close: () => checked.source.close() };
  }
  findings.add("LAYOUT_UNKNOWN", "not a safetensors, GGUF, ONNX or lmpack file, nor a model directory", { file: path, byteOffset: 0 });
  return none;
}

