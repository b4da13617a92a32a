import { readdirSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { packHfSpqr, unpackHfSpqr } from "../../formats/spqr/hf-layout.js";
import { dequantizeSpqr } from "../../formats/spqr/reference.js";
import { SPQR_DEFAULTS, type SpqrTensor } from "../../formats/spqr/types.js";
import { viewAs, type PackedArray } from "../../formats/packed-array.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { assertBytes, goldenArray as get } from "../helpers/golden.js";

/**
 * Golden vectors from the original Vahe1994/SpQR code (../shared/vectors/spqr, README there):
 * packing the legacy codes, statistics, outliers and permutation gives the HF arrays
 * (dense_weights, row_offsets, col_vals, in_perm) byte for byte, in CSR and PTCSR; unpacking
 * gives the representation back; the reference dequant reproduces `deq_perm`,
 * `deq_dense_only_perm`, `W` and `W_f32` bit for bit (−0 ≠ +0).
 */
const VECTORS = join(SHARED_DIR, "vectors", "spqr");
const files = readdirSync(VECTORS).filter((f) => f.endsWith(".safetensors")).sort();
const golden = suite("spqr: golden vectors");



const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** The representation as the legacy dict holds it. */
function fromLegacy(arrays: Map<string, PackedArray>, m: number, n: number, storage: "csr" | "ptcsr"): SpqrTensor {
  const halves = (name: string) => viewAs(get(arrays, `legacy.${name}`).bytes, Uint16Array).slice();
  const csrOffsets = viewAs(get(arrays, "legacy_csr.row_offsets").bytes, Int32Array).slice();
  return {
    params: SPQR_DEFAULTS,
    outFeatures: m,
    inFeatures: n,
    perm: Uint16Array.from(viewAs(get(arrays, "legacy.perm").bytes, Int32Array)),
    codes: get(arrays, "legacy.quant_weights").bytes,
    scaleCodes: get(arrays, "legacy.quant_layer_scale").bytes,
    zeroCodes: get(arrays, "legacy.quant_layer_zeros").bytes,
    scaleScale: halves("quant_layer_scale_qq_scale"),
    scaleZero: halves("quant_layer_scale_qq_zero"),
    zeroScale: halves("quant_layer_zero_qq_scale"),
    zeroZero: halves("quant_layer_zero_qq_zero"),
    outliers: { rowOffsets: csrOffsets, cols: viewAs(get(arrays, "legacy_csr.col_ids").bytes, Uint16Array).slice(), values: viewAs(get(arrays, "legacy_csr.values").bytes, Uint16Array).slice() },
    outlierStorage: storage,
  };
}

for (const file of files) {
  golden(file, async () => {
    const { arrays } = await readAllArrays(join(VECTORS, file));
    const [m, n] = get(arrays, "W").shape as [number, number];
    const storage = file.includes("ptcsr") ? "ptcsr" : "csr";
    const legacy = fromLegacy(arrays, m, n, storage);
    const packed = packHfSpqr(legacy, file);
    assertBytes(packed.denseWeights, get(arrays, "dense_weights").bytes, "dense_weights");
    assertBytes(packed.rowOffsets, get(arrays, "row_offsets").bytes, "row_offsets");
    assertBytes(packed.colVals, get(arrays, "col_vals").bytes, "col_vals");
    assertBytes(packed.inPerm, get(arrays, "in_perm").bytes, "in_perm");

    const unpacked = unpackHfSpqr({ denseWeights: get(arrays, "dense_weights"), rowOffsets: get(arrays, "row_offsets"), colVals: get(arrays, "col_vals"), inPerm: get(arrays, "in_perm") }, m, n);
    assert.is(unpacked.outlierStorage, storage);
    for (const key of ["perm", "codes", "scaleCodes", "zeroCodes", "scaleScale", "scaleZero", "zeroScale", "zeroZero"] as const) assertBytes(u8(unpacked[key]), u8(legacy[key]), `unpacked ${key}`);
    for (const key of ["rowOffsets", "cols", "values"] as const) assertBytes(u8(unpacked.outliers[key]), u8(legacy.outliers[key]), `unpacked outliers.${key}`);

    assertBytes(u8(dequantizeSpqr(unpacked, { permuted: true })), get(arrays, "deq_perm").bytes, "deq_perm");
    assertBytes(u8(dequantizeSpqr(unpacked, { permuted: true, denseOnly: true })), get(arrays, "deq_dense_only_perm").bytes, "deq_dense_only_perm");
    const w = dequantizeSpqr(unpacked);
    assertBytes(u8(w), get(arrays, "W").bytes, "W (original column order)");
    assertBytes(convertFloatBytes(u8(w), "F16", "F32"), get(arrays, "W_f32").bytes, "W_f32");
  });
}

golden("every case of the shared set was found", () => {
  assert.ok(files.length >= 8, `found ${files.length} golden files in ${VECTORS}`);
});

golden.run();
