import { readdir, readFile, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { readJsonFile, fileExists } from "../io/json-file.js";
import { BufferSource, type RandomAccessSource } from "../io/random-access.js";
import { importMatMulNBits } from "../onnx/import.js";
import { decodeModel, encodeModel, MS_DOMAIN, type DecodedModel } from "../onnx/model.js";
import { MAX_INLINE_MODEL_BYTES } from "../onnx/export-decoder.js";
import type { onnx } from "../../schemas/gen/onnx.js";
import type { Findings } from "./findings.js";
import { InitializerChecker, type PlacedInitializer } from "./onnx-initializers.js";
import { closeAll, type ScanArray, type Validated } from "./types.js";

/**
 * ONNX models: one .onnx file, or a folder of them (lmpack's decoder export with
 * genai_config.json, or a per-layer export). Per model: the ModelProto decodes; every
 * initializer is placed (onnx-initializers.ts); every node input and graph output is produced
 * by something before it; every com.microsoft MatMulNBits node reads back through lmpack's
 * importer (attributes, B/scales/zero_points shapes, the act-order Gather) on its own, so one
 * bad node does not hide the others. A decoder folder's genai_config.json must match its graph.
 */
export async function validateOnnx(path: string, findings: Findings): Promise<Validated> {
  const isDir = (await stat(path)).isDirectory();
  const sources: RandomAccessSource[] = [];
  const arrays: ScanArray[] = [];
  const models = isDir ? (await readdir(path)).filter((n) => n.endsWith(".onnx")).sort().map((n) => join(path, n)) : [path];
  if (models.length === 0) findings.add("LAYOUT_UNKNOWN", "no .onnx model in the folder", { file: path });
  const graphs = new Map<string, DecodedModel>();
  let count = 0;
  for (const model of models) {
    const checked = await validateModel(model, findings);
    if (checked === undefined) continue;
    sources.push(...checked.sources);
    arrays.push(...checked.arrays);
    graphs.set(model, checked.model);
    count += checked.initializers;
  }
  if (isDir) await checkGenaiConfig(path, graphs, findings);
  return { layout: "onnx", entries: [], checked: count, arrays, declared: { method: "onnx" }, close: () => closeAll(sources) };
}

async function validateModel(path: string, findings: Findings): Promise<{ model: DecodedModel; initializers: number; arrays: ScanArray[]; sources: RandomAccessSource[] } | undefined> {
  const size = await findings.guard({ file: path }, async () => (await stat(path)).size);
  if (size === undefined) return undefined;
  if (size > MAX_INLINE_MODEL_BYTES) return void findings.add("HEADER_TOO_LARGE", "protobuf caps a ModelProto at 2 GiB: this file cannot be an ONNX model", { file: path, expected: `<= ${MAX_INLINE_MODEL_BYTES} bytes`, actual: size });
  const bytes = new Uint8Array(await readFile(path));
  const model = await findings.guard({ file: path }, () => decodeModel(bytes, path));
  if (model === undefined) return undefined;
  const graph = model.graph;
  if (graph == null) return void findings.add("CONTAINER_HEADER_INVALID", "the ModelProto has no graph", { file: path });
  const modelSource = new BufferSource(bytes, path);
  const checker = new InitializerChecker(path, resolve(dirname(path)), bytes, modelSource, findings);
  const placed = await checker.check(graph.initializer ?? []);
  checkWiring(graph, path, findings);
  await checkMatMulNBits(graph, placed, path, findings);
  const arrays: ScanArray[] = [];
  const scales = new Set((graph.node ?? []).filter(isMatMulNBits).map((n) => n.input?.[2] ?? ""));
  // Only MatMulNBits scales are judged: other constants may hold ±Inf or NaN by design (the
  // fp16 decode tables of the dequantization subgraphs, attention masks).
  for (const [name, p] of placed) {
    if (!scales.has(name) || p.source === undefined || p.byteOffset === undefined || (p.dtype !== "F32" && p.dtype !== "F16")) continue;
    arrays.push({ name, file: p.file, dtype: p.dtype, byteOffset: p.byteOffset, byteLength: p.byteLength, role: "scale", source: p.source });
  }
  return { model, initializers: placed.size, arrays, sources: [modelSource, ...checker.sources] };
}

type GraphProto = onnx.GraphProto.$Properties;
type NodeProto = onnx.NodeProto.$Properties;

function isMatMulNBits(node: NodeProto): boolean {
  return node.opType === "MatMulNBits" && node.domain === MS_DOMAIN;
}

/** Every node input is a graph input, an initializer or an earlier node's output; each value is produced once. */
function checkWiring(graph: GraphProto, file: string, findings: Findings): void {
  const defined = new Set<string>([...(graph.input ?? []).map((i) => i.name ?? ""), ...(graph.initializer ?? []).map((t) => t.name ?? "")]);
  (graph.node ?? []).forEach((node, index) => {
    const name = node.name || `#${index} (${node.opType ?? "?"})`;
    // Nodes with subgraphs may read outer-scope values inside them; their own inputs are still checked.
    for (const input of node.input ?? []) {
      if (input !== "" && !defined.has(input)) findings.add("GRAPH_INPUT_UNDEFINED", `node reads "${input}", which no graph input, initializer or earlier node produces`, { file, tensor: name, actual: input });
    }
    for (const output of node.output ?? []) {
      if (output === "") continue;
      if (defined.has(output)) findings.add("TENSOR_DUPLICATE", `value "${output}" is produced twice`, { file, tensor: name, actual: output });
      defined.add(output);
    }
  });
  for (const output of graph.output ?? []) {
    if (!defined.has(output.name ?? "")) findings.add("GRAPH_OUTPUT_UNDEFINED", "nothing produces this graph output", { file, tensor: output.name ?? "" });
  }
}

/**
 * Each MatMulNBits node through onnx/import.ts alone: a model of the node (and the act-order
 * Gather feeding it) whose external initializers are read inline. A finding about an
 * initializer gets the initializer's byte offset when the importer gave none.
 */
async function checkMatMulNBits(graph: GraphProto, placed: Map<string, PlacedInitializer>, file: string, findings: Findings): Promise<void> {
  const nodes = graph.node ?? [];
  const producer = new Map<string, NodeProto>();
  for (const node of nodes) for (const output of node.output ?? []) producer.set(output, node);
  const declared = new Set((graph.initializer ?? []).map((t) => t.name ?? ""));
  for (const node of nodes.filter(isMatMulNBits)) {
    const feeding = producer.get(node.input?.[0] ?? "");
    const part = feeding?.opType === "Gather" ? [feeding, node] : [node];
    const names = [...new Set(part.flatMap((n) => n.input ?? []))];
    // An initializer that failed placement was reported already; the importer would only repeat it.
    if (names.some((n) => declared.has(n) && !placed.has(n))) continue;
    const initializers: onnx.TensorProto.$Properties[] = [];
    for (const p of names.map((n) => placed.get(n))) {
      if (p === undefined) continue;
      initializers.push(p.file === file ? p.tensor : { name: p.tensor.name ?? "", dataType: p.tensor.dataType ?? 0, dims: p.tensor.dims ?? [], rawData: await p.source!.read(p.byteOffset!, p.byteLength) });
    }
    const before = findings.list.length;
    await findings.guard({ file, tensor: node.name ?? "" }, () => importMatMulNBits(encodeModel({ irVersion: 8, graph: { node: part, initializer: initializers } }), file));
    for (const f of findings.list.slice(before)) {
      const p = f.tensor === undefined ? undefined : placed.get(f.tensor);
      if (p !== undefined && f.byteOffset === undefined && p.byteOffset !== undefined) {
        f.byteOffset = p.byteOffset;
        f.file = p.file;
      }
    }
  }
}

/** genai_config.json (lmpack's decoder export): its decoder file exists and its layer count matches the graph's KV outputs. */
async function checkGenaiConfig(dir: string, graphs: Map<string, DecodedModel>, findings: Findings): Promise<void> {
  const path = join(dir, "genai_config.json");
  if (!(await fileExists(path))) return;
  const config = await findings.guard({ file: path }, () => readJsonFile(path, 16 * 1024 * 1024, "CONFIG_INVALID")) as { model?: { decoder?: { filename?: unknown; num_hidden_layers?: unknown } } } | undefined;
  const decoder = config?.model?.decoder;
  if (config === undefined) return;
  if (typeof decoder?.filename !== "string" || !(await fileExists(join(dir, decoder.filename)))) {
    findings.add("CONFIG_INVALID", "model.decoder.filename does not name a model file in the folder", { file: path, actual: decoder?.filename ?? "absent" });
    return;
  }
  const model = graphs.get(join(dir, decoder.filename));
  if (model === undefined) return;
  const layers = new Set((model.graph?.output ?? []).map((o) => /^present\.(\d+)\.key$/.exec(o.name ?? "")?.[1]).filter((x) => x !== undefined));
  if (decoder.num_hidden_layers !== layers.size) {
    findings.add("CONFIG_SHAPE_MISMATCH", "model.decoder.num_hidden_layers differs from the graph's present.N.key outputs", { file: path, expected: `${layers.size} (the graph)`, actual: decoder.num_hidden_layers });
  }
}
