import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import { withVptqSemantics } from "../../converters/vptq/entry.js";
import { FormatError } from "../../formats/errors.js";
import { dequantizeVptq } from "../../formats/vptq/reference.js";
import type { VptqTensor } from "../../formats/vptq/types.js";
import { viewAs, type PackedArray } from "../../formats/packed-array.js";
import { decode, expectedWidened, F16, F16_TABLE, referenceRound } from "../helpers/float-reference.js";
import { CLI, SHARED_DIR, tempDir } from "../helpers/paths.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * VPTQ checkpoints end to end against ../shared/checkpoints/tinystories-656K-vptq (packed by the
 * original microsoft/VPTQ code): dense f32 export equals reference-dense-cuda-semantics by default
 * and reference-dense (the original torch fallback) with --vptq-dequant torch, and widens the fp16
 * tensors exactly; hf-vptq → hf-vptq and hf-vptq → .lmpack → hf-vptq give model.safetensors back as
 * a whole file (and the config); inspect reports the tech report's bits per weight, recomputed here
 * from config.json; the two semantics differ on most elements, each within ½ fp16 ulp of |c·s| (one
 * ulp of W where W's fp16 grid is coarser than c·s's: the vectors README's bound misses that case);
 * foreign targets and foreign sources are refused; config_for_layers faults are typed errors.
 */
const VPTQ = join(SHARED_DIR, "checkpoints", "tinystories-656K-vptq");
const FP6 = join(SHARED_DIR, "checkpoints", "tinystories-656K-fp6");
const SPQR = join(SHARED_DIR, "checkpoints", "tinystories-656K-spqr");
const REF = { cuda: join(VPTQ, "reference-dense-cuda-semantics.safetensors"), torch: join(VPTQ, "reference-dense.safetensors") };
const test = suite("vptq: checkpoints, CLI and round trips");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir("lmpack-vptq-");
});
test.after(() => work.cleanup());

function lmpack(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", cwd: work.path, env: { ...process.env, NO_COLOR: "1", LMPACK_SHARED: SHARED_DIR } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
function convert(...args: string[]): void {
  const r = lmpack("convert", ...args);
  assert.is(r.status, 0, `convert ${args.join(" ")}: ${r.stderr}`);
}

type Tensors = Map<string, PackedArray>;
type LayerConfig = Record<string, unknown> & { in_features: number; out_features: number; vector_lens: number[]; num_centroids: number[]; num_res_centroids: number[]; group_num: number; group_size: number; outlier_size: number; enable_norm: boolean };
const tensorsOf = async (path: string): Promise<Tensors> => (await readAllArrays(path)).arrays;
const readJson = async (path: string) => JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
const layersOf = (config: Record<string, unknown>) => (config["quantization_config"] as { config_for_layers: Record<string, LayerConfig> }).config_for_layers;
const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.is(actual.length, expected.length, `${what}: byte length`);
  const at = actual.findIndex((b, i) => b !== expected[i]);
  assert.is(at, -1, `${what}: first differing byte at ${at}`);
}
function assertSameTensor(actual: PackedArray | undefined, expected: PackedArray, what: string): void {
  assert.ok(actual !== undefined, `${what}: ${expected.name} is missing`);
  assert.is(actual!.dtype, expected.dtype, `${what}: ${expected.name} dtype`);
  assert.equal(actual!.shape, expected.shape, `${what}: ${expected.name} shape`);
  assertSameBytes(actual!.bytes, expected.bytes, `${what}: ${expected.name}`);
}
async function assertSameFile(actual: string, expected: string): Promise<void> {
  assertSameBytes(new Uint8Array(await readFile(actual)), new Uint8Array(await readFile(expected)), `${actual} vs ${expected}`);
}
/** A dense f32 export's 14 linears equal the reference of `semantics`, and differ from the other one. */
async function assertReferenceDense(dir: string, semantics: "cuda" | "torch", what: string): Promise<Tensors> {
  const [dense, reference, other] = await Promise.all([tensorsOf(join(dir, "model.safetensors")), tensorsOf(REF[semantics]), tensorsOf(REF[semantics === "cuda" ? "torch" : "cuda"])]);
  assert.is(reference.size, 14);
  for (const t of reference.values()) {
    assertSameTensor(dense.get(t.name), t, `${what} vs ${semantics} reference`);
    assert.ok(dense.get(t.name)!.bytes.some((b, i) => b !== other.get(t.name)!.bytes[i]), `${what}: ${t.name} also equals the other semantics' reference`);
  }
  return dense;
}

test("checkpoint → safetensors f32: 14 layers equal the CUDA reference (default) or the torch one, fp16 tensors widened, no quantization_config", async () => {
  const stored = await tensorsOf(join(VPTQ, "model.safetensors"));
  const others = [...stored.values()].filter((t) => t.dtype === "F16" && !/\.(centroids|res_centroids)\.weight$|\.weight_(scale|bias)$/.test(t.name));
  assert.is(others.length, 6);
  for (const [semantics, flags] of [["cuda", []], ["torch", ["--vptq-dequant", "torch"]], ["cuda", ["--vptq-dequant", "cuda"]]] as const) {
    const out = join(work.path, `dense-${semantics}-${flags.length}`);
    convert(VPTQ, "--to", "safetensors", "--dtype", "f32", ...flags, "--out", out);
    const dense = await assertReferenceDense(out, semantics, `dense ${flags.join(" ") || "(default)"}`);
    for (const t of others) {
      const widened = Uint32Array.from(viewAs(t.bytes, Uint16Array), (h) => expectedWidened(F16, h));
      assertSameTensor(dense.get(t.name), { ...t, dtype: "F32", bytes: u8(widened) }, "dense vs widened checkpoint");
    }
    assert.is(dense.size, 20);
    assert.is((await readJson(join(out, "config.json")))["quantization_config"], undefined, "a dense export drops quantization_config");
  }
});

test("checkpoint → hf-vptq: model.safetensors identical as a whole file, config.json deep-equal", async () => {
  const out = join(work.path, "self");
  convert(VPTQ, "--to", "hf-vptq", "--out", out);
  await assertSameFile(join(out, "model.safetensors"), join(VPTQ, "model.safetensors"));
  assert.equal(await readJson(join(out, "config.json")), await readJson(join(VPTQ, "config.json")));
});

test("checkpoint → .lmpack → hf-vptq is the same file; inspect --verify passes; .lmpack → f32 equals both references", async () => {
  const container = join(work.path, "trip.lmpack");
  const back = join(work.path, "trip-hf-vptq");
  convert(VPTQ, "--to", "lmpack", "--out", container);
  convert(container, "--to", "hf-vptq", "--out", back);
  await assertSameFile(join(back, "model.safetensors"), join(VPTQ, "model.safetensors"));
  assert.equal(await readJson(join(back, "config.json")), await readJson(join(VPTQ, "config.json")));
  const r = lmpack("inspect", container, "--verify", "--json");
  assert.is(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as { ok: boolean; layout: string; verification: { failures: unknown[] }; quantization: { packedTensors: number }; tensors: { representation: string }[] };
  assert.ok(report.ok);
  assert.is(report.layout, "lmpack");
  assert.equal(report.verification.failures, []);
  assert.is(report.quantization.packedTensors, 14);
  assert.is(report.tensors.filter((t) => t.representation === "vptq").length, 14);
  for (const semantics of ["cuda", "torch"] as const) {
    const dense = join(work.path, `trip-dense-${semantics}`);
    convert(container, "--to", "safetensors", "--dtype", "f32", "--vptq-dequant", semantics, "--out", dense);
    await assertReferenceDense(dense, semantics, `lmpack → dense ${semantics}`);
  }
});

test("inspect --json: method vptq, 14 packed tensors; per tensor v8 k256+16 and the tech report's bits, recomputed from config.json", async () => {
  const r = lmpack("inspect", VPTQ, "--json");
  assert.is(r.status, 0, r.stderr);
  type Quant = { vectorLen: number; centroids: number; resCentroids: number; indexBitsPerWeight: number; codebookBitsPerWeight: number; effectiveBitsPerWeight: number; actOrder: boolean };
  const report = JSON.parse(r.stdout) as { quantization: { method: string; format: string; packedTensors: number; packedParameters: number; effectiveBitsPerWeight: number }; tensors: { name: string; shape: number[]; parameters: number; bytes: number; quant?: Quant }[] };
  assert.is(report.quantization.method, "vptq");
  assert.is(report.quantization.format, "v8-k256-16");
  assert.is(report.quantization.packedTensors, 14);
  const layers = layersOf(await readJson(join(VPTQ, "config.json")));
  const stored = await tensorsOf(join(VPTQ, "model.safetensors"));
  const packed = report.tensors.filter((t) => t.quant !== undefined);
  assert.is(packed.length, 14);
  let [bits, params] = [0, 0];
  const near = (actual: number, expected: number, what: string) => assert.ok(Math.abs(actual - expected) < 1e-12, `${what}: ${actual}, expected ${expected}`);
  for (const t of packed) {
    const module = t.name.replace(/\.weight$/, "");
    const c = layers[module]!;
    assert.ok(c !== undefined, `config_for_layers lacks ${module}`);
    const [out, inF, vl, k, kr, G] = [c.out_features, c.in_features, c.vector_lens[1]!, c.num_centroids[1]!, c.num_res_centroids[1]!, c.group_num];
    assert.equal(t.shape, [out, inF]);
    assert.is(t.parameters, out * inF);
    const q = t.quant!;
    assert.equal([q.vectorLen, q.centroids, q.resCentroids, q.actOrder], [8, 256, 16, true], t.name);
    assert.is(c.outlier_size, 0);
    // (log2 256 + log2 16) bits per vector of 8, over the rows padded to a multiple of 8.
    const padded = Math.ceil(out / vl) * vl;
    const indexBits = ((inF - c.outlier_size) * Math.ceil(out / vl) * (Math.log2(k) + Math.log2(kr))) / (out * inF);
    near(indexBits, ((8 + 4) / 8) * (padded / out), `${t.name}: formula vs (8+4)/8`);
    const codebookBits = (16 * vl * (k + kr) * G) / (out * inF) + (c.enable_norm ? (32 * inF) / (out * inF) : 0);
    near(q.indexBitsPerWeight, indexBits, `${t.name}: index bits`);
    near(q.codebookBitsPerWeight, codebookBits, `${t.name}: codebook bits`);
    near(q.effectiveBitsPerWeight, indexBits + codebookBits, `${t.name}: effective bits`);
    // Stored bytes: every array of the module in model.safetensors.
    const bytes = [...stored.values()].filter((a) => a.name.startsWith(`${module}.`)).reduce((s, a) => s + a.bytes.length, 0);
    assert.is(t.bytes, bytes, `${t.name}: stored bytes`);
    [bits, params] = [bits + (indexBits + codebookBits) * t.parameters, params + t.parameters];
  }
  assert.is(report.quantization.packedParameters, params);
  near(report.quantization.effectiveBitsPerWeight, bits / params, "model effective bits");
});

/** ulp of |x| in fp16 (subnormal spacing below 2^-14). */
function ulpF16(x: number): number {
  const a = Math.abs(x);
  if (a < 2 ** -14) return 2 ** -24;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  return 2 ** (e - 10);
}

test("the semantics differ on most elements, each by ≤ ½ fp16 ulp of |c·s| (or one ulp of W where that is coarser; c from the unpacked layer)", async () => {
  const checkpoint = await openCheckpoint(VPTQ);
  const torch = withVptqSemantics(checkpoint, "torch");
  const refs = { cuda: await tensorsOf(REF.cuda), torch: await tensorsOf(REF.torch) };
  let [differ, total, largest, coarser] = [0, 0, 0, 0];
  try {
    for (const entry of checkpoint.tensors.filter((t) => t.packed?.representation === "vptq")) {
      const t = (await entry.packed!.load()) as VptqTensor;
      const p = t.params;
      assert.is(p.outlierSize, 0);
      const [out, inF, vl] = [t.outFeatures, t.inFeatures, p.vectorLen];
      const cuda = viewAs(await entry.read(), Uint16Array);
      const tor = viewAs(await torch.tensors.find((x) => x.name === entry.name)!.read(), Uint16Array);
      assertSameBytes(u8(dequantizeVptq(t)), u8(cuda), `${entry.name}: the library's default semantics is the CLI's`);
      const [rc, rt] = [viewAs(refs.cuda.get(entry.name)!.bytes, Float32Array), viewAs(refs.torch.get(entry.name)!.bytes, Float32Array)];
      for (let k = 0; k < inF; k++) {
        const [g, e, j] = [Math.floor(k / p.groupSize), k % p.groupSize, t.perm![k]!];
        const s = decode(F16, t.weightScale![j]!);
        for (let i = 0; i < out; i++) {
          const at = (g * Math.ceil(out / vl) + Math.floor(i / vl)) * p.groupSize + e;
          const main = decode(F16, t.centroids[(g * p.numCentroids + t.mainIndices[at]!) * vl + (i % vl)]!);
          const res = decode(F16, t.resCentroids![(g * p.numResCentroids + t.resIndices![at]!) * vl + (i % vl)]!);
          const c = decode(F16, referenceRound(F16_TABLE, main + res));
          const w = i * inF + j;
          const [a, b] = [decode(F16, cuda[w]!), decode(F16, tor[w]!)];
          if (a !== rc[w] || b !== rt[w]) assert.unreachable(`${entry.name} [${i}, ${j}]: ${a}/${b} vs references ${rc[w]}/${rt[w]}`);
          total++;
          if (cuda[w] === tor[w]) continue;
          differ++;
          largest = Math.max(largest, Math.abs(a - b));
          // The gap between c·s + b and h(c·s) + b is ≤ ½ ulp(c·s); where W's fp16 grid is coarser than c·s's, that gap
          // can only move W's rounding by one step of W's grid (the README's bound omits this case).
          const [u, U] = [ulpF16(c * s), Math.max(ulpF16(a), ulpF16(b))];
          if (U > u) coarser++;
          const ok = U > u ? Math.abs(a - b) === U : Math.abs(a - b) <= 0.5 * u;
          if (!ok) assert.unreachable(`${entry.name} [${i}, ${j}]: cuda ${a} vs torch ${b} differ by ${Math.abs(a - b)}: more than ½ ulp(|c·s|) = ${0.5 * u} or not one ulp(W) = ${U} (c ${c}, s ${s})`);
        }
      }
    }
  } finally {
    await checkpoint.close();
  }
  assert.is(total, 393216);
  assert.ok(differ / total > 0.5, `only ${differ} of ${total} elements differ: the CUDA default may be the torch semantics`);
  console.log(`  cuda vs torch: ${differ} of ${total} elements differ (${((100 * differ) / total).toFixed(1)} %), by up to ${largest}; ${coarser} by one ulp of W where W's grid is coarser than c·s's`);
});

test("refusals: VPTQ → hf-gptq / hf-spqr, FP6 and SpQR → hf-vptq (UNSUPPORTED_TARGET naming a layer, no output)", () => {
  for (const [source, target, representation] of [[VPTQ, "hf-gptq", "vptq"], [VPTQ, "hf-spqr", "vptq"], [FP6, "hf-vptq", "fpx"], [SPQR, "hf-vptq", "spqr"]] as const) {
    const out = join(work.path, `refused-${representation}-${target}`);
    const r = lmpack("convert", source, "--to", target, "--out", out);
    assert.is(r.status, 2, `${source} → ${target} exited ${r.status}: ${r.stderr}`);
    assert.match(r.stderr, /UNSUPPORTED_TARGET/);
    assert.match(r.stderr, /tensor "model\.layers\.\d\.(self_attn|mlp)\.\w+_proj\.weight"/);
    assert.ok(r.stderr.includes(representation), `names the layer's representation: ${r.stderr}`);
    assert.not.ok(existsSync(out), `no output after refusing ${target}`);
  }
});

const MODULE = "model.layers.1.self_attn.v_proj";
/** A copy of the checkpoint with config_for_layers edited (weights and side files unchanged). */
async function configCopy(name: string, edit: (layers: Record<string, LayerConfig>) => void): Promise<string> {
  const dir = join(work.path, name);
  await mkdir(dir, { recursive: true });
  const config = await readJson(join(VPTQ, "config.json"));
  edit(layersOf(config));
  await writeFile(join(dir, "config.json"), JSON.stringify(config, null, 2));
  for (const f of ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]) await copyFile(join(VPTQ, f), join(dir, f));
  return dir;
}

test("config_for_layers with the algorithm branch's extra keys (norm_dim, enable_proxy_error, indices_as_float null) imports; they are dropped on export", async () => {
  const dir = await configCopy("extra-keys", (layers) => {
    for (const c of Object.values(layers)) Object.assign(c, { norm_dim: 0, enable_proxy_error: false, indices_as_float: null });
  });
  const [copy, original] = [await openCheckpoint(dir), await openCheckpoint(VPTQ)];
  try {
    const layers = copy.tensors.filter((t) => t.packed?.representation === "vptq");
    assert.is(layers.length, 14);
    for (const t of layers) assertSameBytes(await t.read(), await original.tensors.find((o) => o.name === t.name)!.read(), t.name);
  } finally {
    await Promise.all([copy.close(), original.close()]);
  }
  const out = join(work.path, "extra-keys-out");
  convert(dir, "--to", "hf-vptq", "--out", out);
  await assertSameFile(join(out, "model.safetensors"), join(VPTQ, "model.safetensors"));
  assert.equal(await readJson(join(out, "config.json")), await readJson(join(VPTQ, "config.json")), "the written config holds the keys transformers and vptq main accept");
});

for (const [name, edit, key] of [
  ["in_features missing", (l: Record<string, LayerConfig>) => delete (l[MODULE] as Record<string, unknown>)["in_features"], "in_features"],
  ["out_features missing", (l: Record<string, LayerConfig>) => delete (l[MODULE] as Record<string, unknown>)["out_features"], "out_features"],
  ["no entry for a packed layer", (l: Record<string, LayerConfig>) => delete l[MODULE], MODULE],
] as const) {
  test(`config_for_layers with ${name} → QUANT_CONFIG_INVALID naming config.json and the layer`, async () => {
    const dir = await configCopy(name.replace(/\W+/g, "-"), edit);
    let error: unknown;
    try {
      await (await openCheckpoint(dir)).close();
    } catch (e) {
      error = e;
    }
    assert.instance(error, FormatError, `expected a FormatError, got ${String(error)}`);
    const e = error as FormatError;
    assert.is(e.code, "QUANT_CONFIG_INVALID", e.message);
    assert.is(e.file, join(dir, "config.json"), e.message);
    assert.ok(e.message.includes(MODULE) && e.message.includes(key), e.message);
    const r = lmpack("convert", dir, "--to", "safetensors", "--out", join(dir, "dense"));
    assert.is(r.status, 2, r.stderr);
    assert.match(r.stderr, /QUANT_CONFIG_INVALID/);
  });
}

test.run();
