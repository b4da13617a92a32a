import { basename } from "node:path";
import type { Findings } from "./findings.js";
import type { Declared } from "./types.js";

/**
 * What a file or folder name claims, against what its metadata declares: "…-gptq-4bit" with an
 * 8-bit config, "…-q8_0.gguf" whose general.file_type is F16, "…-v8-k65536-256" whose layers are
 * v4-k256. Names are how people pick files; a name that lies is a defect of the upload. Only
 * claims that a name makes are checked (most names make none).
 */

/** Method words in names → the quant_method values they stand for. */
const METHOD_WORDS: [RegExp, string[]][] = [
  [/(^|[-_.])gptq([-_.]|$)/, ["gptq", "auto-round"]],
  [/(^|[-_.])awq([-_.]|$)/, ["awq", "auto-round"]],
  [/(^|[-_.])auto-?round([-_.]|$)/, ["auto-round", "gptq", "awq"]],
  [/(^|[-_.])fp[56]([-_.]|$)/, ["fp6_tc"]],
  [/(^|[-_.])spqr([-_.]|$)/, ["spqr"]],
  [/(^|[-_.])vptq([-_.]|$)/, ["vptq"]],
];

/** Bit widths in names: "4bit", "4-bit", "w4", "w4a16", "int4", "fp6". */
const BITS_WORDS = [/(?:^|[-_.])(\d{1,2})-?bits?(?:[-_.]|$)/, /(?:^|[-_.])w(\d{1,2})(?:a\d{1,2})?(?:[-_.]|$)/, /(?:^|[-_.])int(\d{1,2})(?:[-_.]|$)/, /(?:^|[-_.])fp([56])(?:[-_.]|$)/];

/** ggml type names as they appear in GGUF file names (longest first, so q4_k_m is not read as q4_k). */
const GGML_WORDS = /(?:^|[-_.])(iq[1-4]_(?:xxs|xs|s|m|nl)|q[2-8]_k(?:_[sml])?|q[4-8]_[01]|tq[12]_0|bf16|f16|f32)(?:[-_.]|$)/;

export function checkNameClaims(path: string, declared: Declared | undefined, findings: Findings): void {
  if (declared === undefined) return;
  const name = basename(path).toLowerCase();
  const claim = (what: string, expected: string, actual: string) => findings.add("NAME_CLAIM_MISMATCH", `the name claims ${what}, but the metadata declares otherwise`, { file: path, expected: `${expected} (the name)`, actual }, "error");
  // GGUF, ONNX and lmpack files name their contents their own way (checked below for GGUF).
  if (declared.method !== "gguf" && declared.method !== "onnx" && declared.method !== "lmpack") {
    for (const [word, methods] of METHOD_WORDS) {
      const m = word.exec(name);
      if (m !== null && !methods.includes(declared.method)) claim(`the ${m[0].replace(/[-_.]/g, "")} format`, methods[0]!, declared.method === "dense" ? "dense (unquantized) weights" : declared.method);
    }
    const bits = BITS_WORDS.map((re) => re.exec(name)?.[1]).find((b) => b !== undefined);
    if (bits !== undefined && declared.bits !== undefined && Number(bits) !== declared.bits) claim(`${bits}-bit weights`, `${bits} bits`, `${declared.bits} bits`);
  }
  const vptq = /(?:^|[-_.])v(\d+)-k(\d+)(?:-(\d+))?(?:[-_.]|$)/.exec(name);
  if (vptq !== null && declared.vptq !== undefined) {
    const [, v, k, res] = vptq;
    const d = declared.vptq;
    if (Number(v) !== d.vectorLen || Number(k) !== d.centroids || (res !== undefined && Number(res) !== d.resCentroids)) {
      claim(`VPTQ v${v}-k${k}${res === undefined ? "" : `-${res}`}`, `v${v}-k${k}${res === undefined ? "" : `-${res}`}`, `v${d.vectorLen}-k${d.centroids}-${d.resCentroids}`);
    }
  }
  const ggml = GGML_WORDS.exec(name);
  if (ggml !== null && declared.ggmlType !== undefined) {
    // A name's "q4_k_m" is general.file_type Q4_K_M; the table gives the file type's main ggml type.
    const said = ggml[1]!.toUpperCase();
    if (said !== declared.ggmlType && said.replace(/_[SML]$/, "") !== declared.ggmlType.replace(/_[SML]$/, "")) claim(`${said} tensors`, said, declared.ggmlType);
  }
}
