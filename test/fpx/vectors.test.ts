import { readdirSync } from "node:fs";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { encodeF32Array } from "../../formats/fpx/codec.js";
import { fpxFormat } from "../../formats/fpx/format.js";
import { quantizeFpx, quantizeFpxCodes } from "../../formats/fpx/quantize.js";
import { dequantizeCodes, dequantizeFpx } from "../../formats/fpx/reference.js";
import { packTc, unpackTc } from "../../formats/fpx/tc-layout.js";
import { bytesOf, viewAs, type PackedArray } from "../../formats/packed-array.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";
import { assertBytes, goldenArray } from "../helpers/golden.js";

/**
 * Golden vectors from torchao (pytorch/ao@aa252872) and FP6-LLM (../shared/vectors/fp6, README
 * there): codec tables and encoder cases, per-row scales, codes, packed layout bytes, f32 and
 * fp16 dequantization, every array compared as raw bytes (−0 ≠ +0).
 */
const VECTORS = join(SHARED_DIR, "vectors", "fp6");
const files = readdirSync(VECTORS).filter((f) => f.endsWith(".safetensors")).sort();
const golden = suite("fpx: golden vectors");
const get = (arrays: Map<string, PackedArray>, name: string) => goldenArray(arrays, name).bytes;

interface Params {
  ebits: number;
  mbits: number;
  nbits: number;
  max_normal?: number;
  shape: number[];
}



for (const file of files) {
  golden(file, async () => {
    const { arrays, metadata } = await readAllArrays(join(VECTORS, file));
    const p = JSON.parse(metadata["params"]!) as Params;
    const format = fpxFormat(p.ebits, p.mbits);
    assert.is(format.nbits, p.nbits);
    if (file.startsWith("codec_")) {
      assert.is(format.maxNormal, p.max_normal);
      const codes = get(arrays, "codes");
      const values = new Float32Array(codes.length);
      for (let i = 0; i < codes.length; i++) values[i] = format.values[codes[i]!]!;
      assertBytes(bytesOf(values), get(arrays, "values_f32"), "decoded values (f32)");
      assertBytes(convertFloatBytes(bytesOf(values), "F32", "F16"), get(arrays, "values_f16"), "decoded values (f16)");
      const input = viewAs(get(arrays, "enc_input_f32"), Float32Array);
      assertBytes(encodeF32Array(format, input), get(arrays, "enc_expected_code"), "encoder");
      return;
    }
    const [M, N] = p.shape as [number, number];
    if (file.startsWith("pack_")) {
      const codes = get(arrays, "codes");
      assertBytes(packTc(codes, M, N, p.nbits), get(arrays, "packed"), "packed");
      assertBytes(unpackTc(get(arrays, "packed"), M, N, p.nbits), codes, "unpacked codes");
      return;
    }
    // scaled_*: torchao's to_scaled_tc_floatx, codes from the f32 scale.
    const weightArray = arrays.get("weight")!;
    const weight = viewAs(convertFloatBytes(weightArray.bytes, weightArray.dtype as "F16" | "F32", "F32"), Float32Array);
    const q = quantizeFpxCodes(weight, M, N, { format, codesFrom: "f32-scale" });
    assertBytes(bytesOf(q.scalesF32), get(arrays, "scale_f32"), "scale_f32");
    assertBytes(bytesOf(q.scales), get(arrays, "scale"), "stored fp16 scale");
    assertBytes(q.codes, get(arrays, "codes"), "codes");
    const tensor = quantizeFpx(weight, M, N, { format, codesFrom: "f32-scale" });
    assertBytes(tensor.packed, get(arrays, "packed"), "packed");
    const dequant = dequantizeFpx(tensor);
    assertBytes(bytesOf(dequant), get(arrays, "dequant"), "dequant (f32)");
    assertBytes(convertFloatBytes(bytesOf(dequant), "F32", "F16"), get(arrays, "dequant_f16"), "dequant_f16 (FP6-LLM)");
    assertBytes(bytesOf(dequantizeCodes(get(arrays, "codes"), M, N, format, viewAs(get(arrays, "scale"), Uint16Array))), get(arrays, "dequant"), "dequant of the golden codes");
  });
}

golden("every case of the shared set was found", () => {
  assert.ok(files.length >= 12, `found ${files.length} golden files in ${VECTORS}`);
});

golden.run();
