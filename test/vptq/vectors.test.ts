import { readdirSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { packVptq, unpackVptq, type VptqSuffix } from "../../formats/vptq/hf-layout.js";
import { dequantizeVptq } from "../../formats/vptq/reference.js";
import type { VptqParams, VptqTensor } from "../../formats/vptq/types.js";
import { viewAs, type PackedArray } from "../../formats/packed-array.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { vptqParamsOf, type VptqCaseParams } from "../helpers/vptq-golden.js";
import { assertBytes, goldenArray as get } from "../helpers/golden.js";

/**
 * Golden vectors from the original microsoft/VPTQ code (../shared/vectors/vptq, README there):
 * packing the given indices gives the `indices` words byte for byte (rows whose gs·tb is not a
 * multiple of 32, padding rows, group_num 2, outliers, no perm, a residual wider than the main
 * index); unpacking gives the indices back; dequantization reproduces `deq_cuda` (one rounding)
 * and `deq_torch` / `W` (two roundings) bit for bit.
 */
const VECTORS = join(SHARED_DIR, "vectors", "vptq");
const files = readdirSync(VECTORS).filter((f) => f.endsWith(".safetensors")).sort();
const golden = suite("vptq: golden vectors");

const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** The representation from the `in.*` arrays the quantizer handed to the packer. */
function fromInputs(arrays: Map<string, PackedArray>, p: VptqParams, out: number, inFeatures: number): VptqTensor {
  const halves = (name: string) => (arrays.has(name) ? viewAs(get(arrays, name).bytes, Uint16Array).slice() : undefined);
  const ints = (name: string) => (arrays.has(name) ? Uint32Array.from(viewAs(get(arrays, name).bytes, Int32Array)) : undefined);
  const perm = ints("in.perm");
  return {
    params: p,
    outFeatures: out,
    inFeatures,
    dtype: "F16",
    centroids: halves("in.centroids")!,
    resCentroids: halves("in.res_centroids"),
    mainIndices: ints("in.indices_main")!,
    resIndices: ints("in.indices_res"),
    outlierCentroids: halves("in.outlier_centroids"),
    outlierIndices: arrays.has("in.outlier_indices") ? Uint16Array.from(ints("in.outlier_indices")!) : undefined,
    perm: perm === undefined ? undefined : Uint16Array.from(perm),
    weightScale: halves("in.weight_scale"),
    weightBias: halves("in.weight_bias"),
  };
}

const PACKED: Record<VptqSuffix, string> = {
  "centroids.weight": "centroids.weight",
  "res_centroids.weight": "res_centroids.weight",
  indices: "indices",
  "outlier_centroids.weight": "outlier_centroids.weight",
  outlier_indices: "outlier_indices",
  perm: "perm",
  weight_scale: "weight_scale",
  weight_bias: "weight_bias",
};

for (const file of files) {
  golden(file, async () => {
    const { arrays, metadata } = await readAllArrays(join(VECTORS, file));
    const c = JSON.parse(metadata["params"]!) as VptqCaseParams;
    const p = vptqParamsOf(c);
    const [out, inFeatures] = [c.out_features, c.in_features];
    const input = fromInputs(arrays, p, out, inFeatures);
    const packed = packVptq(input);
    for (const [suffix, bytes] of packed) assertBytes(bytes, get(arrays, PACKED[suffix]).bytes, suffix);
    assert.is(packed.size, [...Object.values(PACKED)].filter((n) => arrays.has(n)).length, "the same arrays as the original layer");

    const stored = new Map<VptqSuffix, PackedArray>();
    for (const suffix of Object.keys(PACKED) as VptqSuffix[]) if (arrays.has(PACKED[suffix])) stored.set(suffix, get(arrays, PACKED[suffix]));
    const unpacked = unpackVptq(stored, p, out, inFeatures, file);
    assertBytes(u8(unpacked.mainIndices), u8(input.mainIndices), "unpacked main indices");
    if (input.resIndices !== undefined) assertBytes(u8(unpacked.resIndices!), u8(input.resIndices), "unpacked residual indices");

    assertBytes(u8(dequantizeVptq(unpacked, "cuda")), get(arrays, "deq_cuda").bytes, "deq_cuda (one rounding)");
    const torch = dequantizeVptq(unpacked, "torch");
    assertBytes(u8(torch), get(arrays, "deq_torch").bytes, "deq_torch (two roundings)");
    assertBytes(convertFloatBytes(u8(torch), "F16", "F32"), get(arrays, "W").bytes, "W");
  });
}

golden("every case of the shared set was found", () => {
  assert.ok(files.length >= 9, `found ${files.length} golden files in ${VECTORS}`);
});

golden.run();
