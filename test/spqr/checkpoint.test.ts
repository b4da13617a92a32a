import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openCheckpoint } from "../../converters/open.js";
import { SafetensorsWriter } from "../../converters/safetensors/writer.js";
import { packHfSpqr, unpackHfSpqr } from "../../formats/spqr/hf-layout.js";
import { viewAs, type PackedArray } from "../../formats/packed-array.js";
import { expectedWidened, F16 } from "../helpers/float-reference.js";
import { CLI, SHARED_DIR, tempDir } from "../helpers/paths.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * SpQR checkpoints end to end against ../shared/checkpoints/tinystories-656K-spqr (written by the
 * original Vahe1994/SpQR converter): dense f32 export equals reference-dense (the original host
 * dequantizer) and widens the fp16 tensors exactly; hf-spqr → hf-spqr and hf-spqr → .lmpack →
 * hf-spqr give the original model.safetensors back as a whole file (and the config); inspect
 * reports ≈1 % outliers and the paper's bits per weight per tensor; a PTCSR copy of one layer
 * reads, dequantizes like the CSR original (up to the sign of zeros at permuted column 0) and
 * stays PTCSR on export; targets that cannot hold SpQR (and SpQR of an FP6 source) are refused.
 */
const SPQR = join(SHARED_DIR, "checkpoints", "tinystories-656K-spqr");
const FP6 = join(SHARED_DIR, "checkpoints", "tinystories-656K-fp6");
const PTCSR_MODULE = "model.layers.0.mlp.gate_proj"; // [384, 128]
const test = suite("spqr: checkpoints, CLI and round trips");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir("lmpack-spqr-");
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
const tensorsOf = async (path: string): Promise<Tensors> => (await readAllArrays(path)).arrays;
const readJson = async (path: string) => JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
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
/** The whole files, byte for byte (header, order, metadata and data). */
async function assertSameFile(actual: string, expected: string): Promise<void> {
  assertSameBytes(new Uint8Array(await readFile(actual)), new Uint8Array(await readFile(expected)), `${actual} vs ${expected}`);
}
/** A dense f32 export's 14 linears equal reference-dense (the original host dequantizer, widened). */
async function assertReferenceDense(dir: string, what: string): Promise<Tensors> {
  const [dense, reference] = await Promise.all([tensorsOf(join(dir, "model.safetensors")), tensorsOf(join(SPQR, "reference-dense.safetensors"))]);
  assert.is(reference.size, 14);
  for (const t of reference.values()) assertSameTensor(dense.get(t.name), t, `${what} vs reference-dense`);
  return dense;
}

test("checkpoint → safetensors f32: 14 layers equal reference-dense, 6 fp16 tensors widened exactly, no quantization_config", async () => {
  const out = join(work.path, "dense");
  convert(SPQR, "--to", "safetensors", "--dtype", "f32", "--out", out);
  const dense = await assertReferenceDense(out, "dense");
  const stored = await tensorsOf(join(SPQR, "model.safetensors"));
  const others = [...stored.values()].filter((t) => t.dtype === "F16");
  assert.is(others.length, 6);
  for (const t of others) {
    const halves = viewAs(t.bytes, Uint16Array);
    const widened = Uint32Array.from(halves, (h) => expectedWidened(F16, h));
    assertSameTensor(dense.get(t.name), { ...t, dtype: "F32", bytes: u8(widened) }, "dense vs widened checkpoint");
  }
  assert.is(dense.size, 20);
  assert.is((await readJson(join(out, "config.json")))["quantization_config"], undefined, "a dense export drops quantization_config");
});

test("checkpoint → hf-spqr: model.safetensors identical as a whole file, config.json deep-equal", async () => {
  const out = join(work.path, "self");
  convert(SPQR, "--to", "hf-spqr", "--out", out);
  await assertSameFile(join(out, "model.safetensors"), join(SPQR, "model.safetensors"));
  assert.equal(await readJson(join(out, "config.json")), await readJson(join(SPQR, "config.json")));
});

test("checkpoint → .lmpack → hf-spqr is the same file; inspect --verify passes; .lmpack → f32 equals reference-dense", async () => {
  const container = join(work.path, "trip.lmpack");
  const back = join(work.path, "trip-hf-spqr");
  const dense = join(work.path, "trip-dense");
  convert(SPQR, "--to", "lmpack", "--out", container);
  convert(container, "--to", "hf-spqr", "--out", back);
  convert(container, "--to", "safetensors", "--dtype", "f32", "--out", dense);
  await assertSameFile(join(back, "model.safetensors"), join(SPQR, "model.safetensors"));
  assert.equal(await readJson(join(back, "config.json")), await readJson(join(SPQR, "config.json")));
  const r = lmpack("inspect", container, "--verify", "--json");
  assert.is(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout) as { ok: boolean; verification: { failures: unknown[] }; quantization: { packedTensors: number } };
  assert.ok(report.ok);
  assert.equal(report.verification.failures, []);
  assert.is(report.quantization.packedTensors, 14);
  await assertReferenceDense(dense, "lmpack → dense");
});

test("inspect --json: method spqr, 14 packed tensors, ≈1 % outliers, bits 3 + 6/16 + 64/256 + 32·share per tensor", async () => {
  const r = lmpack("inspect", SPQR, "--json");
  assert.is(r.status, 0, r.stderr);
  type Quant = { outlierShare?: number; effectiveBitsPerWeight: number; bits: number; groupSize: number };
  const report = JSON.parse(r.stdout) as { quantization: { method: string; packedTensors: number; packedParameters: number; effectiveBitsPerWeight: number }; tensors: { name: string; shape: number[]; parameters: number; quant?: Quant }[] };
  assert.is(report.quantization.method, "spqr");
  assert.is(report.quantization.packedTensors, 14);
  assert.is(report.quantization.packedParameters, 393216);
  const shapes = ((await readJson(join(SPQR, "config.json")))["quantization_config"] as { shapes: Record<string, number> }).shapes;
  const packed = report.tensors.filter((t) => t.quant !== undefined);
  assert.is(packed.length, 14);
  let [bits, params] = [0, 0];
  for (const t of packed) {
    const module = t.name.replace(/\.weight$/, "");
    const [outliers, words] = [shapes[`${module}.col_vals.shape`]!, shapes[`${module}.dense_weights.shape`]!];
    assert.ok(outliers !== undefined && words !== undefined, `config shapes lack ${module}`);
    assert.is(t.parameters, 16 * words, `${t.name}: one 64-bit word per 16 weights`);
    assert.is(t.shape[0]! * t.shape[1]!, t.parameters);
    const share = outliers / t.parameters;
    const q = t.quant!;
    assert.is(q.bits, 3);
    assert.is(q.groupSize, 16);
    assert.ok(q.outlierShare !== undefined && Math.abs(q.outlierShare - share) < 1e-12, `${t.name}: outlierShare ${q.outlierShare}, expected ${share}`);
    assert.ok(share > 0.009 && share < 0.012, `${t.name}: outlier share ${share} is not ≈1 %`);
    const expected = 3 + 6 / 16 + 64 / 256 + 32 * share;
    assert.ok(Math.abs(q.effectiveBitsPerWeight - expected) < 1e-9, `${t.name}: effective bits ${q.effectiveBitsPerWeight}, expected ${expected}`);
    [bits, params] = [bits + expected * t.parameters, params + t.parameters];
  }
  assert.ok(Math.abs(report.quantization.effectiveBitsPerWeight - bits / params) < 1e-9, `model effective bits ${report.quantization.effectiveBitsPerWeight}, expected ${bits / params}`);
});

/** The checkpoint directory with PTCSR_MODULE's outliers rewritten as PTCSR (same tensor order and metadata). */
async function ptcsrCopy(): Promise<{ dir: string; m: number }> {
  const dir = join(work.path, "ptcsr-src");
  await mkdir(dir, { recursive: true });
  const { arrays, metadata } = await readAllArrays(join(SPQR, "model.safetensors"));
  const part = (a: string) => arrays.get(`${PTCSR_MODULE}.${a}`)!;
  const n = 2 * part("in_perm").shape[0]!;
  const m = (16 * part("dense_weights").shape[0]!) / n;
  const csr = unpackHfSpqr({ denseWeights: part("dense_weights"), rowOffsets: part("row_offsets"), colVals: part("col_vals"), inPerm: part("in_perm") }, m, n);
  assert.is(csr.outlierStorage, "csr");
  const packed = packHfSpqr({ ...csr, outlierStorage: "ptcsr" });
  assert.ok(packed.colVals.length / 4 > csr.outliers.cols.length, "the PTCSR copy has padding (the case is not trivial)");
  arrays.set(`${PTCSR_MODULE}.row_offsets`, { ...part("row_offsets"), shape: [packed.rowOffsets.length / 4], bytes: packed.rowOffsets });
  arrays.set(`${PTCSR_MODULE}.col_vals`, { ...part("col_vals"), shape: [packed.colVals.length / 4], bytes: packed.colVals });
  const list = [...arrays.values()];
  const writer = await SafetensorsWriter.create(join(dir, "model.safetensors"), list.map(({ name, dtype, shape }) => ({ name, dtype, shape })), metadata);
  for (const a of list) await writer.write(a.name, a.bytes);
  await writer.finish();
  const config = await readJson(join(SPQR, "config.json"));
  const shapes = (config["quantization_config"] as { shapes: Record<string, number> }).shapes;
  shapes[`${PTCSR_MODULE}.row_offsets.shape`] = m / 16 + 1;
  shapes[`${PTCSR_MODULE}.col_vals.shape`] = packed.colVals.length / 4;
  await writeFile(join(dir, "config.json"), JSON.stringify(config, null, 4));
  for (const side of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]) await copyFile(join(SPQR, side), join(dir, side));
  return { dir, m };
}

test("a PTCSR layer reads, dequantizes as the CSR original (up to ±0 at permuted column 0), and exports as PTCSR", async () => {
  const { dir, m } = await ptcsrCopy();
  const [ptcsr, original] = [await openCheckpoint(dir), await openCheckpoint(SPQR)];
  const entryOf = (c: typeof ptcsr) => c.tensors.find((t) => t.name === `${PTCSR_MODULE}.weight`)!;
  const [a, b] = [entryOf(ptcsr), entryOf(original)];
  assert.is(a.packed?.representation, "spqr");
  const layer = await a.packed!.load();
  assert.is((layer as { outlierStorage?: string }).outlierStorage, "ptcsr");
  const [fromPtcsr, fromCsr] = [viewAs(await a.read(), Uint16Array), viewAs(await b.read(), Uint16Array)];
  const n = a.shape[1]!;
  const column0 = (layer as { perm: Uint16Array }).perm[0]!;
  assert.is(fromPtcsr.length, m * n);
  let signedZeros = 0;
  for (let i = 0; i < fromCsr.length; i++) {
    if (fromPtcsr[i] === fromCsr[i]) continue;
    const bothZero = (fromPtcsr[i]! & 0x7fff) === 0 && (fromCsr[i]! & 0x7fff) === 0;
    if (!bothZero || i % n !== column0) assert.unreachable(`[${Math.floor(i / n)}, ${i % n}]: PTCSR gives 0x${fromPtcsr[i]!.toString(16)}, CSR 0x${fromCsr[i]!.toString(16)}`);
    signedZeros++;
  }
  await Promise.all([ptcsr.close(), original.close()]);
  console.log(`  PTCSR vs CSR: ${signedZeros} zero(s) at original column ${column0} differ in sign only`);
  // Exported to its own layout, the PTCSR layer stays PTCSR: the whole file comes back.
  const out = join(work.path, "ptcsr-out");
  convert(dir, "--to", "hf-spqr", "--out", out);
  const written = await tensorsOf(join(out, "model.safetensors"));
  assert.equal(written.get(`${PTCSR_MODULE}.row_offsets`)!.shape, [m / 16 + 1]);
  await assertSameFile(join(out, "model.safetensors"), join(dir, "model.safetensors"));
  assert.equal(await readJson(join(out, "config.json")), await readJson(join(dir, "config.json")));
  // And through the container too.
  const container = join(work.path, "ptcsr.lmpack");
  const back = join(work.path, "ptcsr-back");
  convert(dir, "--to", "lmpack", "--out", container);
  convert(container, "--to", "hf-spqr", "--out", back);
  await assertSameFile(join(back, "model.safetensors"), join(dir, "model.safetensors"));
});

test("refusals: SpQR layers → hf-gptq and hf-fp6, FP6 layers → hf-spqr (UNSUPPORTED_TARGET naming a layer, no output)", () => {
  for (const [source, target, representation] of [[SPQR, "hf-gptq", "spqr"], [SPQR, "hf-fp6", "spqr"], [FP6, "hf-spqr", "fpx"]] as const) {
    const out = join(work.path, `refused-${representation}-${target}`);
    const r = lmpack("convert", source, "--to", target, "--out", out);
    assert.ok(r.status !== 0 && r.status !== null, `${source} → ${target} exited ${r.status}`);
    assert.is(r.status, 2, r.stderr);
    assert.match(r.stderr, /UNSUPPORTED_TARGET/);
    assert.match(r.stderr, /tensor "model\.layers\.\d\.(self_attn|mlp)\.\w+_proj\.weight"/);
    assert.ok(r.stderr.includes(representation), `names the layer's representation: ${r.stderr}`);
    assert.not.ok(existsSync(out), `no output after refusing ${target}`);
  }
});

test.run();
