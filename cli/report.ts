import type { InspectReport } from "../converters/inspect.js";
import { formatBytes } from "../converters/io/byte-size.js";

/** Human-readable rendering of an inspect report (the --json output is the report itself). */
export function renderInspect(report: InspectReport): string {
  const lines: string[] = [];
  lines.push(`source:      ${report.source}`);
  lines.push(`layout:      ${report.layout} (${report.files.length} file${report.files.length === 1 ? "" : "s"})`);
  const c = report.config;
  if (c !== undefined) {
    lines.push(`model:       ${c.architecture ?? "?"} (${c.modelType ?? "?"}), ${c.numLayers} layers, hidden ${c.hiddenSize}, intermediate ${c.intermediateSize ?? "?"}`);
    lines.push(`attention:   ${c.numHeads} heads, ${c.numKvHeads} KV heads, head_dim ${c.headDim}, rope theta ${c.ropeTheta} (from ${c.ropeThetaSource})${c.ropeScaling !== undefined ? `, scaling ${JSON.stringify(c.ropeScaling)}` : ""}`);
    lines.push(`vocab:       ${c.vocabSize}, tied embeddings ${c.tiedEmbeddings ? "yes" : "no"}, rms_norm_eps ${c.rmsNormEps}`);
  } else {
    lines.push("model:       (no config.json)");
  }
  const e = report.embeddings;
  lines.push(`embeddings:  embed_tokens ${e.embedTokensStored ? "stored" : "absent"}, lm_head ${e.lmHeadStored ? "stored" : "absent"}`);
  const dtypes = Object.entries(report.dtypes).map(([d, n]) => `${d} ${n.toLocaleString("en-US")}`).join(", ");
  lines.push(`parameters:  ${report.parameters.toLocaleString("en-US")} (${dtypes})`);
  lines.push(`size:        ${formatBytes(report.bytes)}, ${report.bitsPerWeight.toFixed(2)} bits per weight`);
  const q = report.quantization;
  if (q !== undefined) {
    const group = q.groupSize === -1 ? "per-channel" : `group ${q.groupSize}`;
    lines.push(`quantized:   ${q.method} (${q.format}), ${q.bits}-bit, ${group}, ${q.sym ? "sym" : "asym"}${q.descAct ? ", act-order" : ""}; ${q.packedTensors} packed linears, ${q.packedParameters.toLocaleString("en-US")} weights, ${q.effectiveBitsPerWeight.toFixed(3)} effective bits per weight`);
  }
  if (report.sideFiles.length > 0) lines.push(`side files:  ${report.sideFiles.join(", ")}`);
  lines.push("");
  const rows = report.tensors.map((t) => [t.name, storage(t), `[${t.shape.join(", ")}]`, formatBytes(t.bytes), t.bitsPerWeight.toFixed(2), t.quant === undefined ? "" : t.quant.effectiveBitsPerWeight.toFixed(3)]);
  lines.push(...table(["tensor", "storage", "shape", "bytes", "bits/w", "eff bits/w"], rows));
  return lines.join("\n");
}

/** "F16", or for packed tensors e.g. "int4 g32 sym (gptq-v1)", "e3m2 per-row (hf-fp6)". */
function storage(t: InspectReport["tensors"][number]): string {
  const q = t.quant;
  const ggml = t.notes?.["ggmlType"];
  if (q === undefined) return typeof ggml === "string" ? `${ggml} (gguf)` : t.dtype;
  if (q.format !== undefined) return `${q.format} per-row (${q.sourceLayout})`;
  if (q.vectorLen !== undefined) return `vptq v${q.vectorLen} k${q.centroids}${q.resCentroids ? `+${q.resCentroids}` : ""} (${q.sourceLayout})`;
  if (q.outlierShare !== undefined) return `spqr${q.bits} g${q.groupSize} ${(q.outlierShare * 100).toFixed(2)}% outliers (${q.sourceLayout})`;
  return `int${q.bits} g${q.groupSize} ${q.sym ? "sym" : "asym"}${q.actOrder ? " act-order" : ""} (${q.sourceLayout})`;
}

function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(head), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)];
}
