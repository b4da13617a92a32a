import { readdirSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { packAwq, unpackAwq } from "../../formats/int-group/awq-layout.js";
import { packGptq, unpackGptq, type ZeroConvention } from "../../formats/int-group/gptq-layout.js";
import { bytesOf, viewAs, type PackedArray } from "../../formats/packed-array.js";
import { dequantize } from "../../formats/int-group/reference.js";
import { decodeScales } from "../../formats/int-group/scales.js";
import type { IntBits, IntGroupTensor } from "../../formats/int-group/types.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { assertBytes, goldenArray as get } from "../helpers/golden.js";

/**
 * Golden vectors produced by the original auto-round / AutoGPTQ packers (../shared/vectors/gptq,
 * README there): packing the given codes, zeros and scales must give the same qweight, qzeros,
 * scales and g_idx bytes, and unpack + reference dequant must give `deq`, all bit for bit.
 */
const VECTORS = join(SHARED_DIR, "vectors", "gptq");
const cases = readdirSync(VECTORS).filter((f) => f.endsWith(".safetensors")).sort();
const layouts = suite("int-group layouts: golden vectors");

interface CaseParams {
  format: "gptq_v1" | "autoround_v2" | "awq";
  bits: IntBits;
  group_size: number;
  sym: boolean;
  in_features: number;
  out_features: number;
  v1_zero_overflow?: boolean;
}



/** The representation as the golden helpers give it (codes, effective zeros, scales, g_idx). */
function fromHelpers(arrays: Map<string, PackedArray>, p: CaseParams): IntGroupTensor {
  const N = p.out_features;
  const K = p.in_features;
  const groupSize = p.group_size === -1 ? K : p.group_size;
  const zeros = Uint16Array.from(viewAs(get(arrays, "zero_points").bytes, Int32Array));
  const gIdxArray = p.format === "gptq_v1" && arrays.has("act_order_perm") ? viewAs(get(arrays, "g_idx").bytes, Int32Array) : undefined;
  return {
    params: { bits: p.bits, groupSize, sym: p.sym, scaleDtype: "F16" },
    outFeatures: N,
    inFeatures: K,
    codes: get(arrays, "codes").bytes,
    scales: decodeScales(get(arrays, "scales"), [Math.ceil(K / groupSize), N]).values,
    zeros,
    gIdx: gIdxArray,
  };
}

for (const file of cases) {
  layouts(file, async () => {
    const { arrays, metadata } = await readAllArrays(join(VECTORS, file));
    const p = JSON.parse(metadata["params"]!) as CaseParams;
    const expected = fromHelpers(arrays, p);
    const packedArrays = { qweight: get(arrays, "qweight"), qzeros: get(arrays, "qzeros"), scales: get(arrays, "scales") };
    let unpacked: IntGroupTensor;
    if (p.format === "awq") {
      unpacked = unpackAwq(packedArrays, { groupSize: p.group_size, sym: p.sym });
      if (!p.v1_zero_overflow) {
        const packed = packAwq(expected, file);
        assertBytes(packed.qweight, packedArrays.qweight.bytes, "qweight");
        assertBytes(packed.qzeros, packedArrays.qzeros.bytes, "qzeros");
        assertBytes(packed.scales, packedArrays.scales.bytes, "scales");
      }
    } else {
      const zeros: ZeroConvention = p.format === "gptq_v1" ? "v1" : "v2";
      unpacked = unpackGptq({ ...packedArrays, gIdx: arrays.get("g_idx") }, { bits: p.bits, groupSize: p.group_size, sym: p.sym, zeros });
      // The overflow case holds what a broken packer wrote: a reader target, never a writer target.
      if (!p.v1_zero_overflow) {
        const packed = packGptq(expected, zeros, file);
        assertBytes(bytesOf(packed.qweight), packedArrays.qweight.bytes, "qweight");
        assertBytes(bytesOf(packed.qzeros), packedArrays.qzeros.bytes, "qzeros");
        assertBytes(packed.scales, packedArrays.scales.bytes, "scales");
        if (arrays.has("g_idx")) assertBytes(bytesOf(packed.gIdx), get(arrays, "g_idx").bytes, "g_idx");
      }
    }
    assertBytes(unpacked.codes, expected.codes, "unpacked codes");
    assertBytes(bytesOf(unpacked.zeros), bytesOf(expected.zeros), "unpacked zero points");
    assertBytes(bytesOf(unpacked.scales), bytesOf(expected.scales), "unpacked scales");
    assert.is(unpacked.gIdx === undefined, expected.gIdx === undefined, "act-order g_idx kept, trivial g_idx dropped");
    if (expected.gIdx !== undefined) assertBytes(bytesOf(unpacked.gIdx!), bytesOf(expected.gIdx), "g_idx");
    // GPTQ's deq came from forward(eye(K)) (+0), AWQ's from dequantize_gemm (IEEE −0 kept).
    const negativeZero = p.format === "awq" ? "keep" : "positive";
    assertBytes(bytesOf(dequantize(unpacked, { negativeZero })), get(arrays, "deq").bytes, "dequantized weight vs deq");
  });
}

layouts("every case of the shared set was found", () => {
  assert.ok(cases.length >= 43, `found ${cases.length} golden files in ${VECTORS}`);
});

layouts.run();
