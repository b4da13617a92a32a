import { suite } from "uvu";
import * as assert from "uvu/assert";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import { fpxFormat, NAMED_FORMATS, parseFormat, type FpxFormat } from "../../formats/fpx/format.js";
import { quantizeFpx, quantizeFpxCodes } from "../../formats/fpx/quantize.js";
import { dequantizeCodes, dequantizeFpx } from "../../formats/fpx/reference.js";
import { fpxKernel } from "../../formats/fpx/simd-kernel.js";
import { packTc, unpackTc } from "../../formats/fpx/tc-layout.js";
import { scaleValues, type CodesFrom } from "../../formats/fpx/types.js";
import { ConversionError, FormatError } from "../../formats/errors.js";
import { mulberry32, type Rng } from "../helpers/prng.js";

/**
 * Properties of the FPx quantizer beyond the golden files: the SIMD kernels give the scalar
 * path's bytes (on tie-heavy inputs too, and for dequantization), "stored-scale" codes are the nearest grid point to
 * every weight and never worse than torchao's, the error stays within half a grid step at every
 * magnitude, unpack(pack(codes)) = codes for every code value, and bad shapes and values are refused.
 */
const test = suite("fpx: quantizer properties");
const FORMATS = NAMED_FORMATS.map((name) => parseFormat(name));
const MODES: CodesFrom[] = ["stored-scale", "f32-scale"];

/** Rows with a spread of magnitudes, outliers, an all-zero row, a tiny row, and exact and near midpoints. */
function testMatrix(rng: Rng, M: number, N: number, format: FpxFormat): Float32Array {
  const w = new Float32Array(M * N);
  for (let r = 0; r < M; r++) {
    const spread = 2 ** (Math.floor(rng() * 24) - 12);
    for (let c = 0; c < N; c++) w[r * N + c] = (rng() - 0.5) * spread * (rng() < 0.01 ? 30 : 1);
  }
  const row = (r: number) => w.subarray(r * N, (r + 1) * N);
  row(1).fill(0);
  row(1)[3] = -0;
  row(2).forEach((_, c) => (row(2)[c] = (c % 5) * 1e-9 * (c % 2 ? -1 : 1)));
  // Midpoints between neighbouring grid values times the row's scale, exact and nudged by ±1
  // ulp (f32), so that the quotient rounds onto the midpoint itself: rows 4-6 against the
  // stored fp16 scale, rows 7-9 against torchao's fp32 scale.
  const values = format.values.slice(0, format.signMask);
  for (const r of [4, 5, 6, 7, 8, 9]) {
    const target = row(r);
    const amax = Math.fround(format.maxNormal * (1 + rng()));
    target[0] = amax;
    const scaleF32 = Math.fround(amax / format.maxNormal);
    const s = r < 7 ? new Float32Array(convertFloatBytes(convertFloatBytes(new Uint8Array(new Float32Array([scaleF32]).buffer), "F32", "F16"), "F16", "F32").buffer)[0]! : scaleF32;
    for (let c = 1; c < N; c++) {
      const k = Math.floor(rng() * (values.length - 1));
      const mid = (values[k]! + values[k + 1]!) / 2;
      const base = Math.fround(mid * s);
      const bits = new Uint32Array(new Float32Array([base]).buffer)[0]! + [0, 1, -1][r % 3]!;
      target[c] = new Float32Array(new Uint32Array([bits]).buffer)[0]! * (c % 2 ? -1 : 1);
    }
  }
  return w;
}

test("the SIMD kernels are available here, so the fast path is the one tested", () => {
  assert.ok(fpxKernel(fpxFormat(3, 2)) !== undefined, "WebAssembly SIMD kernel failed to build");
});

for (const format of FORMATS) {
  test(`${format.name}: SIMD quantize+pack equals the scalar path (F32, F16, BF16 inputs, both modes)`, () => {
    const rng = mulberry32(format.nbits * 100 + format.ebits);
    for (const [M, N] of [[64, 64], [128, 192], [192, 128]] as const) {
      const w = testMatrix(rng, M, N, format);
      for (const dtype of ["F32", "F16", "BF16"] as const) {
        const bytes = convertFloatBytes(new Uint8Array(w.buffer), "F32", dtype);
        const values = new Float32Array(convertFloatBytes(bytes, dtype, "F32").slice().buffer);
        for (const codesFrom of MODES) {
          const scalar = quantizeFpxCodes(values, M, N, { format, codesFrom });
          const fast = quantizeFpx({ bytes, dtype }, M, N, { format, codesFrom });
          const packed = packTc(scalar.codes, M, N, format.nbits);
          const at = fast.packed.findIndex((b, i) => b !== packed[i]);
          assert.is(at, -1, `${M}x${N} ${dtype} ${codesFrom}: packed bytes differ at ${at}`);
          assert.equal(Array.from(fast.scales), Array.from(scalar.scales), `${M}x${N} ${dtype} ${codesFrom}: scales`);
        }
      }
    }
  });

  test(`${format.name}: stored-scale codes are the nearest grid point, never worse than torchao's, within half a step`, () => {
    const rng = mulberry32(7 + format.nbits);
    const [M, N] = [128, 128];
    const w = testMatrix(rng, M, N, format);
    const nearest = quantizeFpx(w, M, N, { format, codesFrom: "stored-scale" });
    const reference = quantizeFpx(w, M, N, { format, codesFrom: "f32-scale" });
    const dNearest = dequantizeFpx(nearest);
    const dReference = dequantizeFpx(reference);
    const scales = scaleValues(nearest.scales);
    const grid = Array.from(format.values.slice(0, format.signMask));
    let strictlyBetter = 0;
    for (let r = 0; r < M; r++) {
      const s = scales[r]!;
      for (let c = 0; c < N; c++) {
        const i = r * N + c;
        const x = Math.abs(w[i]!);
        // Exact in f64: grid values have ≤ 5 significant bits, fp16 scales 11.
        const errors = grid.map((v) => Math.abs(x - v * s));
        const best = Math.min(...errors);
        const error = Math.abs(w[i]! - dNearest[i]!);
        assert.ok(error === best, `row ${r} col ${c}: error ${error}, nearest grid point gives ${best}`);
        const referenceError = Math.abs(w[i]! - dReference[i]!);
        assert.ok(error <= referenceError, `row ${r} col ${c}: ${error} > torchao's ${referenceError}`);
        if (error < referenceError) strictlyBetter++;
        // Half a step: the gap between the two grid values around |w|/s (below saturation).
        const q = x / s;
        if (s > 0 && q < format.maxNormal) {
          const upper = grid.findIndex((v) => v >= q);
          const gap = upper <= 0 ? 0 : grid[upper]! - grid[upper - 1]!;
          assert.ok(error <= (gap / 2) * s, `row ${r} col ${c}: error ${error} above half a step ${(gap / 2) * s}`);
        }
      }
    }
    assert.ok(strictlyBetter > 0, "the midpoint rows should make stored-scale strictly better somewhere");
  });

  test(`${format.name}: SIMD dequantization equals the table path bit for bit`, () => {
    const rng = mulberry32(57 * format.nbits + format.mbits);
    for (const [M, N] of [[64, 64], [128, 192]] as const) {
      const tensor = quantizeFpx(testMatrix(rng, M, N, format), M, N, { format, codesFrom: "stored-scale" });
      const simd = new Uint32Array(dequantizeFpx(tensor).buffer);
      const table = new Uint32Array(dequantizeCodes(unpackTc(tensor.packed, M, N, format.nbits), M, N, format, tensor.scales).buffer);
      assert.is(simd.findIndex((v, i) => v !== table[i]), -1, `${M}x${N}`);
    }
  });

  test(`${format.name}: unpack(pack(codes)) = codes for every code value, on random tile-multiple shapes`, () => {
    const rng = mulberry32(31 * format.nbits);
    for (let trial = 0; trial < 6; trial++) {
      const M = 64 * (1 + Math.floor(rng() * 4));
      const N = 64 * (1 + Math.floor(rng() * 4));
      const codes = new Uint8Array(M * N).map((_, i) => (i < 1 << format.nbits ? i : Math.floor(rng() * (1 << format.nbits))));
      const back = unpackTc(packTc(codes, M, N, format.nbits), M, N, format.nbits);
      assert.is(back.findIndex((v, i) => v !== codes[i]), -1, `${M}x${N}`);
    }
  });
}

test("shapes that are not 64x64 multiples are refused, never padded", () => {
  const format = fpxFormat(3, 2);
  for (const [M, N] of [[64, 96], [96, 64], [100, 128], [0, 64]] as const) {
    assert.throws(() => packTc(new Uint8Array(M * N), M, N, 6), (e: unknown) => e instanceof FormatError && e.code === "PACKED_SHAPE_MISMATCH", `pack ${M}x${N}`);
    assert.throws(() => quantizeFpx(new Float32Array(M * N), M, N, { format, codesFrom: "stored-scale" }), (e: unknown) => e instanceof FormatError && e.code === "PACKED_SHAPE_MISMATCH", `quantize ${M}x${N}`);
  }
  assert.throws(() => packTc(new Uint8Array(64 * 64).fill(64), 64, 64, 6), (e: unknown) => e instanceof FormatError && e.code === "PACKED_VALUE_INVALID", "a 7-bit code in a 6-bit layout");
});

test("NaN/Inf weights and scales beyond fp16 are refused naming the row and column", () => {
  const format = fpxFormat(3, 2);
  for (const codesFrom of MODES) {
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const w = new Float32Array(64 * 64).fill(0.5);
      w[5 * 64 + 7] = Number.NaN;
      const bytes = convertFloatBytes(new Uint8Array(w.buffer), "F32", dtype);
      assert.throws(() => quantizeFpx({ bytes, dtype }, 64, 64, { format, codesFrom, tensor: "t" }), (e: unknown) => e instanceof ConversionError && /row 5, column 7/.test(e.message) && /"t"/.test(e.message), `${dtype} ${codesFrom}`);
    }
    const big = new Float32Array(64 * 64).fill(1);
    big[2 * 64] = 3e6; // 3e6 / 28 > 65504
    assert.throws(() => quantizeFpx(big, 64, 64, { format, codesFrom }), (e: unknown) => e instanceof ConversionError && /row 2/.test(e.message));
  }
});

test("an all-zero row has scale 0 and keeps each zero's sign; a tiny row keeps a nonzero scale in stored-scale mode", () => {
  const format = fpxFormat(3, 2);
  const w = new Float32Array(64 * 64).fill(0.25);
  w.fill(0, 0, 64);
  w[3] = -0;
  w.fill(1e-9, 64, 128);
  for (const codesFrom of MODES) {
    const q = quantizeFpxCodes(w, 64, 64, { format, codesFrom });
    assert.is(q.scales[0], 0);
    assert.is(q.codes[3], format.signMask);
    assert.is(q.codes[4], 0);
    // f32(1e-9 / 28) underflows fp16: torchao stores 0 and loses the row; stored-scale keeps it.
    assert.is(q.scales[1], codesFrom === "f32-scale" ? 0 : 1);
  }
});

test.run();
