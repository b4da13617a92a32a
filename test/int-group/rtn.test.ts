import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { f16BitsToF32Bits } from "../../formats/dense/float-bits.js";
import { UsageError } from "../../formats/errors.js";
import { dequantizeCode, fitGrid, quantizeCode, roundHalfEven, roundToScaleDtype } from "../../formats/int-group/grid.js";
import { quantizeRtn } from "../../formats/int-group/quantizers/rtn.js";
import { quantizeOptRtn } from "../../formats/int-group/quantizers/opt-rtn.js";
import type { IntBits, IntGroupParams, IntGroupTensor } from "../../formats/int-group/types.js";
import { SHARED_DIR } from "../helpers/paths.js";
import { readAllArrays } from "../helpers/safetensors-arrays.js";

/**
 * RTN against auto-round itself: every golden case of ../shared/vectors/gptq (written by
 * auto-round b9f3d00's `quant_tensor_rtn_sym` / `quant_tensor_asym` / `quant_tensor_opt_rtn_sym`
 * and its packers) is re-quantized from its `W`, and scales, zero points, codes and the
 * fake-quant weight must match bit for bit. Act-order cases group the permuted columns. The
 * `*_zero0_overflow` case is included: only its packed qzeros are corrupt, not what is compared.
 */

const VECTORS_DIR = join(SHARED_DIR, "vectors", "gptq");

interface CaseParams {
  bits: IntBits;
  group_size: number;
  sym: boolean;
  quantizer: string;
  in_features: number;
  out_features: number;
}

interface GoldenCase {
  params: CaseParams;
  tensors: Map<string, Uint8Array>;
}

async function loadCase(path: string): Promise<GoldenCase> {
  const { arrays, metadata } = await readAllArrays(path);
  // slice(): a private, aligned copy, so typed views of any width are legal.
  return { params: JSON.parse(metadata["params"] ?? "{}") as CaseParams, tensors: new Map([...arrays].map(([name, a]) => [name, a.bytes.slice()])) };
}

function view<T>(c: GoldenCase, name: string, make: (buffer: ArrayBufferLike) => T): T {
  const bytes = c.tensors.get(name);
  assert.ok(bytes !== undefined, `golden tensor ${name} present`);
  return make(bytes!.buffer);
}

/** The columns in the order groups were formed (act_order_perm, or identity). */
function columnOrder(c: GoldenCase): Int32Array {
  const k = c.params.in_features;
  if (!c.tensors.has("act_order_perm")) return Int32Array.from({ length: k }, (_, i) => i);
  return Int32Array.from(view(c, "act_order_perm", (b) => new BigInt64Array(b)), Number);
}

function bitsOf(x: number): number {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0]!;
}

/**
 * First index where two float32 arrays differ by bit pattern, or -1. With `anyZeroSign`, a zero
 * matches a zero of either sign: auto-round's symmetric `round(w / s) · s` gives the sign of w
 * to weights that round to 0, which integer codes cannot carry (it is no part of the format).
 */
function firstBitMismatch(actual: ArrayLike<number>, expected: ArrayLike<number>, anyZeroSign = false): number {
  for (let i = 0; i < expected.length; i++) {
    if (anyZeroSign && actual[i] === 0 && expected[i] === 0) continue;
    if (bitsOf(actual[i]!) !== bitsOf(expected[i]!)) return i;
  }
  return actual.length === expected.length ? -1 : expected.length;
}

function assertMatches(c: GoldenCase, tensor: IntGroupTensor, order: Int32Array, checkCodes: boolean): void {
  const n = c.params.out_features;
  const k = c.params.in_features;
  const nGroups = tensor.scales.length / n;
  const layerScale = view(c, "layer_scale", (b) => new Float32Array(b)); // [N, G]
  const ourScale = Float32Array.from({ length: n * nGroups }, (_, i) => tensor.scales[(i % nGroups) * n + Math.floor(i / nGroups)]!);
  let at = firstBitMismatch(ourScale, layerScale);
  assert.is(at, -1, `layer_scale[${at}]: got ${ourScale[at]}, expected ${layerScale[at]}`);
  if (!c.params.sym) {
    const layerZp = view(c, "layer_zp", (b) => new Float32Array(b));
    const ourZp = Float32Array.from({ length: n * nGroups }, (_, i) => tensor.zeros[(i % nGroups) * n + Math.floor(i / nGroups)]!);
    at = firstBitMismatch(ourZp, layerZp);
    assert.is(at, -1, `layer_zp[${at}]: got ${ourZp[at]}, expected ${layerZp[at]}`);
  }
  const wQdq = view(c, "W_qdq", (b) => new Float32Array(b));
  const codes = view(c, "codes", (b) => new Uint8Array(b));
  const ourQdq = new Float32Array(n * k);
  const expectedQdq = new Float32Array(n * k);
  for (let row = 0; row < n; row++) {
    for (let i = 0; i < k; i++) {
      const at = row * k + i;
      const g = Math.floor(i / tensor.params.groupSize) * n + row;
      ourQdq[at] = dequantizeCode(tensor.codes[at]!, { scale: tensor.scales[g]!, zero: tensor.zeros[g]! });
      expectedQdq[at] = wQdq[row * k + order[i]!]!;
      if (checkCodes && tensor.codes[at] !== codes[row * k + order[i]!]) {
        assert.unreachable(`code (${row}, ${order[i]}): got ${tensor.codes[at]}, expected ${codes[row * k + order[i]!]}`);
      }
    }
  }
  at = firstBitMismatch(ourQdq, expectedQdq, true);
  assert.is(at, -1, `W_qdq[${at}]: got ${ourQdq[at]}, expected ${expectedQdq[at]}`);
}

function permutedWeight(c: GoldenCase, order: Int32Array): Float32Array {
  const w = view(c, "W", (b) => new Float32Array(b));
  const { out_features: n, in_features: k } = c.params;
  const out = new Float32Array(n * k);
  for (let row = 0; row < n; row++) for (let i = 0; i < k; i++) out[row * k + i] = w[row * k + order[i]!]!;
  return out;
}

/** With F16 storage, opt-RTN keeps the float32 scale's codes and rounds the scale, as auto-round's exporter writes it. */
function assertOptRtnExport(c: GoldenCase, weight: Float32Array, params: IntGroupParams): void {
  const { out_features: n, in_features: k } = c.params;
  const exported = quantizeOptRtn(weight, n, k, { ...params, scaleDtype: "F16" });
  const scalesF16 = view(c, "scales", (b) => new Uint16Array(b)); // [G, N], the same order as ours
  const widened = new Uint32Array(scalesF16.length);
  f16BitsToF32Bits(scalesF16, widened);
  const at = firstBitMismatch(exported.scales, new Float32Array(widened.buffer));
  assert.is(at, -1, `scales[${at}]`);
  assert.equal(exported.codes, quantizeOptRtn(weight, n, k, params).codes);
}

const golden = suite("int-group RTN: auto-round golden vectors");

const caseFiles = readdirSync(VECTORS_DIR).filter((f) => f.endsWith(".safetensors")).sort();

golden("the golden directory holds the expected cases", () => {
  assert.ok(caseFiles.length >= 40, `${caseFiles.length} cases in ${VECTORS_DIR}`);
});

for (const name of caseFiles) {
  golden(`${name}: scales, zeros, codes and W_qdq bit-exact`, async () => {
    const c = await loadCase(join(VECTORS_DIR, name));
    const p = c.params;
    const optRtn = p.quantizer === "opt_rtn_int_sym";
    const params: IntGroupParams = {
      bits: p.bits,
      groupSize: p.group_size === -1 ? p.in_features : p.group_size,
      sym: p.sym,
      scaleDtype: optRtn ? "F32" : "F16",
    };
    const order = columnOrder(c);
    const weight = permutedWeight(c, order);
    const tensor = optRtn ? quantizeOptRtn(weight, p.out_features, p.in_features, params) : quantizeRtn(weight, p.out_features, p.in_features, params);
    assertMatches(c, tensor, order, true);
    if (optRtn) assertOptRtnExport(c, weight, params);
  });
}

golden.run();

// ---------------------------------------------------------------------------------------------

const edges = suite("int-group grid: edge semantics");

const p4: IntGroupParams = { bits: 4, groupSize: 4, sym: true, scaleDtype: "F16" };

edges("round is half-to-even like torch.round", () => {
  const cases: [number, number][] = [[0.5, 0], [1.5, 2], [2.5, 2], [-0.5, 0], [-1.5, -2], [-2.5, -2], [2.4999999, 2], [-7.5, -8], [1e300, 1e300]];
  for (const [x, expected] of cases) assert.is(roundHalfEven(x) + 0, expected, `round(${x})`);
});

edges("w / scale is a float32 quotient before rounding (a double one would round the other way)", () => {
  const params: IntGroupParams = { ...p4, scaleDtype: "F32" };
  let decisive = 0;
  for (let trial = 1; trial < 200; trial++) {
    const grid = { scale: Math.fround(0.01 + trial * 1.2345e-5), zero: 8 };
    for (const tie of [0.5, 1.5, 2.5, -2.5, -3.5]) {
      // fround(tie·s) is off by < 1/2 ulp, so w/s may miss the tie in double yet hit it in float32.
      const w = Math.fround(tie * grid.scale);
      const exact = w / grid.scale;
      if (Math.fround(exact) !== tie || exact === tie) continue;
      assert.is(quantizeCode(w, grid, params), roundHalfEven(tie) + 8, `w=${w}, s=${grid.scale}`);
      if (Math.round(exact) !== roundHalfEven(tie)) decisive++;
    }
  }
  assert.ok(decisive > 0, "some weights tell float32 from double division");
});

edges("sym scale is negative when the positive extreme dominates, positive otherwise", () => {
  assert.ok(fitGrid(-0.5, 1, p4).scale < 0);
  assert.ok(fitGrid(-1, 0.5, p4).scale > 0);
  assert.ok(fitGrid(-1, 1, p4).scale < 0, "a tie takes the negative scale");
  assert.is(quantizeCode(1, fitGrid(-0.5, 1, p4), p4), 0, "the positive extreme lands on code 0");
  assert.is(quantizeCode(-1, fitGrid(-1, 0.5, p4), p4), 0, "the negative extreme lands on code 0");
});

edges("the scale floor keeps the sign and is the dtype's rounding of 1e-5 (1e-8 for F32)", () => {
  assert.is(fitGrid(0, 0, p4).scale, roundToScaleDtype(1e-5, "F16"));
  assert.is(fitGrid(-1e-6, 2e-6, p4).scale, -roundToScaleDtype(1e-5, "F16"), "tiny negative scale: floor keeps the sign");
  assert.is(fitGrid(-1e-7, 2e-7, p4).scale, roundToScaleDtype(1e-5, "F16"), "a scale that rounds to −0 in fp16 is not negative: +floor");
  assert.is(fitGrid(0, 0, { ...p4, sym: false }).scale, roundToScaleDtype(1e-5, "F16"));
  assert.is(fitGrid(0, 0, { ...p4, scaleDtype: "BF16" }).scale, roundToScaleDtype(1e-5, "BF16"));
  assert.is(fitGrid(0, 0, { ...p4, scaleDtype: "F32" }).scale, Math.fround(1e-8));
});

edges("scales are exactly representable in their dtype", () => {
  for (const scaleDtype of ["F16", "BF16", "F32"] as const) {
    const s = fitGrid(-0.0123456, 0.0234567, { ...p4, scaleDtype }).scale;
    assert.is(roundToScaleDtype(s, scaleDtype), s, scaleDtype);
  }
});

edges("refuses shapes and parameters it cannot honour", () => {
  const w = new Float32Array(8);
  const bad: [Float32Array, number, number, IntGroupParams][] = [
    [w, 2, 3, p4],
    [w, 2, 4, { ...p4, bits: 5 as IntBits }],
    [w, 2, 4, { ...p4, groupSize: 0 }],
    [w, 2, 4, { ...p4, groupSize: 1.5 }],
  ];
  const optRtnAsym = (): unknown => quantizeOptRtn(w, 2, 4, { ...p4, sym: false });
  for (const [weight, n, k, params] of bad) {
    try {
      quantizeRtn(weight, n, k, params);
      assert.unreachable("accepted");
    } catch (error) {
      assert.instance(error, UsageError);
      assert.is((error as UsageError).code, "BAD_ARGUMENT");
    }
  }
  assert.throws(optRtnAsym, (error: unknown) => error instanceof UsageError && error.code === "BAD_ARGUMENT");
});

edges("a short last group and K < groupSize behave as auto-round's zero padding (no effect)", () => {
  const w = Float32Array.from({ length: 2 * 10 }, (_, i) => Math.fround(Math.sin(i * 1.7) * 0.03));
  const t = quantizeRtn(w, 2, 10, { ...p4, groupSize: 4 });
  assert.is(t.scales.length, 3 * 2);
  const whole = quantizeRtn(w, 2, 10, { ...p4, groupSize: 64 });
  const perChannel = quantizeRtn(w, 2, 10, { ...p4, groupSize: 10 });
  assert.equal(whole.codes, perChannel.codes);
  assert.equal(whole.scales, perChannel.scales);
});

edges.run();
