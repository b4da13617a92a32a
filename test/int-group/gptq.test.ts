import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FormatError, UsageError } from "../../formats/errors.js";
import { quantizeGptq, type GptqOptions } from "../../formats/int-group/quantizers/gptq.js";
import { quantizeRtn } from "../../formats/int-group/quantizers/rtn.js";
import { dequantizeCode, fitGrid, quantizeCode, type Grid } from "../../formats/int-group/grid.js";
import { dequantize } from "../../formats/int-group/reference.js";
import { groupCount, type IntBits, type IntGroupParams, type IntGroupTensor } from "../../formats/int-group/types.js";
import { actOrderPermutation, upperCholeskyOfInverse, type Hessian } from "../../formats/second-order/index.js";
import { mulberry32, type Rng } from "../helpers/prng.js";

/**
 * GPTQ on auto-round's grid, checked against RTN (which shares the grid, so the two may
 * differ only through error propagation) and against the objective GPTQ minimises,
 * tr(ΔW·H·ΔWᵀ).
 */

const SEED = Number(process.env["LMPACK_GPTQ_SEED"] ?? 0x6e7e9) >>> 0;

/** H = XᵀX / samples from inputs with AR(1)-correlated features, optionally with per-feature scales (so act-order matters). */
function calibrationHessian(rng: Rng, size: number, samples: number, spread = false): Hessian {
  const x = new Float64Array(samples * size);
  const featureScale = Float64Array.from({ length: size }, () => (spread ? 0.2 + 3 * rng() : 1));
  for (let t = 0; t < samples; t++) {
    let previous = 0;
    for (let j = 0; j < size; j++) {
      previous = rng() - 0.5 + 0.8 * previous;
      x[t * size + j] = previous * featureScale[j]!;
    }
  }
  const data = new Float64Array(size * size);
  for (let t = 0; t < samples; t++) {
    for (let i = 0; i < size; i++) {
      const xi = x[t * size + i]! / samples;
      for (let j = 0; j < size; j++) data[i * size + j]! += xi * x[t * size + j]!;
    }
  }
  return { size, data, nSamples: samples };
}

function diagonalHessian(rng: Rng, size: number): Hessian {
  const data = new Float64Array(size * size);
  for (let i = 0; i < size; i++) data[i * size + i] = 0.1 + rng();
  return { size, data };
}

function randomWeight(rng: Rng, rows: number, size: number): Float32Array {
  return Float32Array.from({ length: rows * size }, () => Math.fround((rng() * 2 - 1) * (rng() < 0.02 ? 4 : 1)));
}

/** tr(ΔW·H·ΔWᵀ) with the fake-quant weight. */
function hessianError(weight: Float32Array, tensor: IntGroupTensor, h: Hessian): number {
  const { outFeatures: rows, inFeatures: size } = tensor;
  const quantized = dequantize(tensor, { precision: "f32" });
  let total = 0;
  for (let n = 0; n < rows; n++) {
    const delta = Float64Array.from({ length: size }, (_, c) => weight[n * size + c]! - quantized[n * size + c]!);
    for (let i = 0; i < size; i++) {
      let row = 0;
      for (let j = 0; j < size; j++) row += h.data[i * size + j]! * delta[j]!;
      total += delta[i]! * row;
    }
  }
  return total;
}

function params(bits: IntBits, groupSize: number, sym: boolean): IntGroupParams {
  return { bits, groupSize, sym, scaleDtype: "F16" };
}

function permuteColumns(weight: Float32Array, rows: number, size: number, perm: Int32Array): Float32Array {
  return Float32Array.from({ length: rows * size }, (_, t) => weight[Math.floor(t / size) * size + perm[t % size]!]!);
}

function assertSameCodes(actual: IntGroupTensor, expected: IntGroupTensor, label: string): void {
  assert.equal(actual.scales, expected.scales, `${label}: scales`);
  assert.equal(actual.zeros, expected.zeros, `${label}: zeros`);
  assert.equal(actual.codes, expected.codes, `${label}: codes`);
}

// ---------------------------------------------------------------------------------------------

const exact = suite(`gptq: exact agreements with RTN (seed ${SEED})`);

for (const bits of [2, 3, 4, 8] as const) {
  for (const sym of [true, false]) {
    for (const groupSize of [16, 40]) {
      const p = params(bits, groupSize, sym);
      exact(`diagonal H: GPTQ = RTN (${bits}-bit ${sym ? "sym" : "asym"}, group ${groupSize} of K=40)`, () => {
        const rng = mulberry32(SEED + bits * 10 + groupSize + (sym ? 1 : 0));
        const [rows, size] = [6, 40];
        const weight = randomWeight(rng, rows, size);
        const h = diagonalHessian(rng, size);
        assertSameCodes(quantizeGptq(weight, rows, size, h, { params: p, blockSize: 7 }).tensor, quantizeRtn(weight, rows, size, p), "in order");
        assertSameCodes(quantizeGptq(weight, rows, size, h, { params: p, actOrder: true, staticGroups: true }).tensor, quantizeRtn(weight, rows, size, p), "act-order, static groups");
        // Act-order groups the permuted columns: RTN on the permuted weight, codes scattered back.
        const result = quantizeGptq(weight, rows, size, h, { params: p, actOrder: true });
        const perm = result.perm!;
        const rtn = quantizeRtn(permuteColumns(weight, rows, size, perm), rows, size, p);
        assert.equal(result.tensor.scales, rtn.scales);
        assert.equal(result.tensor.zeros, rtn.zeros);
        for (let n = 0; n < rows; n++) for (let i = 0; i < size; i++) assert.is(result.tensor.codes[n * size + perm[i]!], rtn.codes[n * size + i], `code (${n}, ${perm[i]})`);
      });
    }
  }
}

/**
 * AutoGPTQ's fasterquant transcribed without blocks (each error reaches every later column at
 * once), on [N][K] doubles, with the grids of a group fitted on its current columns.
 */
function referenceGptq(weight: Float32Array, rows: number, size: number, hessian: Hessian, p: IntGroupParams, actOrder: boolean) {
  const h = hessian.data.slice();
  for (let c = 0; c < size; c++) if (h[c * size + c] === 0) h[c * size + c] = 1;
  const perm = actOrder ? actOrderPermutation(h, size) : Int32Array.from({ length: size }, (_, i) => i);
  const w = Float64Array.from(permuteColumns(weight, rows, size, perm));
  const hp = Float64Array.from({ length: size * size }, (_, t) => h[perm[Math.floor(t / size)]! * size + perm[t % size]!]!);
  let diagonalSum = 0;
  for (let c = 0; c < size; c++) diagonalSum += hp[c * size + c]!;
  for (let c = 0; c < size; c++) hp[c * size + c]! += (0.01 * diagonalSum) / size;
  const u = upperCholeskyOfInverse(hp, size);
  const codes = new Uint8Array(rows * size);
  const nScales = groupCount(size, p.groupSize) * rows;
  const [scales, zeros] = [new Float32Array(nScales), new Uint16Array(nScales)];
  const grids: Grid[] = [];
  for (let c = 0; c < size; c++) {
    for (let n = 0; n < rows && c % p.groupSize === 0; n++) {
      const group = Array.from(w.subarray(n * size + c, n * size + Math.min(c + p.groupSize, size)));
      grids[n] = fitGrid(Math.min(...group), Math.max(...group), p);
      [scales[(c / p.groupSize) * rows + n], zeros[(c / p.groupSize) * rows + n]] = [grids[n]!.scale, grids[n]!.zero];
    }
    for (let n = 0; n < rows; n++) {
      const code = quantizeCode(w[n * size + c]!, grids[n]!, p);
      codes[n * size + perm[c]!] = code;
      const e = (w[n * size + c]! - dequantizeCode(code, grids[n]!)) / u[c * size + c]!;
      for (let j = c + 1; j < size; j++) w[n * size + j]! -= e * u[c * size + j]!;
    }
  }
  return { codes, scales, zeros };
}

for (const [bits, sym, actOrder, groupSize] of [[4, true, false, 16], [3, false, true, 16], [2, false, false, 50], [8, true, true, 7]] as const) {
  exact(`matches unblocked AutoGPTQ with groups fitted on current weights (${bits}-bit ${sym ? "sym" : "asym"}, act-order ${actOrder}, group ${groupSize})`, () => {
    const rng = mulberry32(SEED + bits + groupSize);
    const [rows, size] = [7, 50];
    const weight = randomWeight(rng, rows, size);
    const h = calibrationHessian(rng, size, 200, true);
    const p = params(bits, groupSize, sym);
    const expected = referenceGptq(weight, rows, size, h, p, actOrder);
    const actual = quantizeGptq(weight, rows, size, h, { params: p, actOrder, blockSize: 8 }).tensor;
    assert.equal(actual.scales, expected.scales, "scales");
    assert.equal(actual.zeros, expected.zeros, "zeros");
    assert.equal(actual.codes, expected.codes, "codes");
  });
}

exact("static groups fit on the original weights: grids equal RTN's under act-order", () => {
  const rng = mulberry32(SEED + 1);
  const [rows, size] = [8, 64];
  const weight = randomWeight(rng, rows, size);
  const p = params(4, 16, false);
  const result = quantizeGptq(weight, rows, size, calibrationHessian(rng, size, 200, true), { params: p, actOrder: true, staticGroups: true });
  const rtn = quantizeRtn(weight, rows, size, p);
  assert.equal(result.tensor.scales, rtn.scales);
  assert.equal(result.tensor.zeros, rtn.zeros);
  assert.is(result.tensor.gIdx, undefined);
  assert.not.equal(result.tensor.codes, rtn.codes, "but codes absorb the propagated error");
});

exact.run();

// ---------------------------------------------------------------------------------------------

const objective = suite(`gptq: Hessian-weighted error below RTN's (seed ${SEED})`);

for (const bits of [2, 3, 4, 8] as const) {
  for (const sym of [true, false]) {
    for (const variant of ["in order", "act-order", "act-order static", "per-channel act-order"] as const) {
      objective(`${bits}-bit ${sym ? "sym" : "asym"} ${variant}`, () => {
        const rng = mulberry32(SEED + bits * 100 + (sym ? 7 : 0) + variant.length);
        const [rows, size] = [16, 96];
        const weight = randomWeight(rng, rows, size);
        const h = calibrationHessian(rng, size, 384, true);
        const p = params(bits, variant === "per-channel act-order" ? size : 32, sym);
        const options: GptqOptions = { params: p, actOrder: variant !== "in order", staticGroups: variant === "act-order static" };
        const result = quantizeGptq(weight, rows, size, h, options);
        const gptqError = hessianError(weight, result.tensor, h);
        const rtnError = hessianError(weight, quantizeRtn(weight, rows, size, p), h);
        assert.ok(gptqError < 0.9 * rtnError, `GPTQ ${gptqError} vs RTN ${rtnError}`);
        assert.ok(result.hessianLoss > 0 && Number.isFinite(result.hessianLoss));
      });
    }
  }
}

objective.run();

// ---------------------------------------------------------------------------------------------

const structure = suite(`gptq: g_idx, block sizes, dead columns, errors (seed ${SEED})`);

for (const [size, groupSize] of [[96, 32], [100, 32], [50, 7]] as const) {
  structure(`act-order g_idx: gIdx[perm[i]] = ⌊i/${groupSize}⌋, non-decreasing in quantization order (K=${size})`, () => {
    const rng = mulberry32(SEED + size + groupSize);
    const rows = 4;
    const result = quantizeGptq(randomWeight(rng, rows, size), rows, size, calibrationHessian(rng, size, 300, true), { params: params(4, groupSize, true), actOrder: true });
    const { gIdx } = result.tensor;
    const perm = result.perm!;
    assert.ok(gIdx !== undefined && perm !== undefined);
    assert.equal([...perm].sort((a, b) => a - b), Array.from({ length: size }, (_, i) => i), "perm is a permutation");
    const nGroups = groupCount(size, groupSize);
    const members = new Array<number>(nGroups).fill(0);
    for (let i = 0; i < size; i++) {
      const g = gIdx[perm[i]!]!;
      assert.is(g, Math.floor(i / groupSize));
      if (i > 0) assert.ok(g >= gIdx[perm[i - 1]!]!, "non-decreasing in quantization order");
      members[g]!++;
    }
    assert.equal(members, Array.from({ length: nGroups }, (_, g) => Math.min(groupSize, size - g * groupSize)), "group sizes");
    assert.ok(!perm.every((c, i) => c === i), "the spread Hessian really permutes");
  });
}

structure("block sizes 1, 7, 128 give the same codes (the math is identical)", () => {
  const rng = mulberry32(SEED + 2);
  const [rows, size] = [10, 150];
  const weight = randomWeight(rng, rows, size);
  const h = calibrationHessian(rng, size, 400, true);
  for (const extra of [{}, { actOrder: true }, { actOrder: true, staticGroups: true }]) {
    const results = [1, 7, 128].map((blockSize) => quantizeGptq(weight, rows, size, h, { params: params(3, 20, false), blockSize, ...extra }));
    for (const r of results.slice(1)) {
      assertSameCodes(r.tensor, results[0]!.tensor, JSON.stringify(extra));
      assert.ok(Math.abs(r.hessianLoss - results[0]!.hessianLoss) <= 1e-9 * results[0]!.hessianLoss);
    }
  }
});

structure("dead columns (diag H = 0) dequantize to exactly 0", () => {
  const rng = mulberry32(SEED + 3);
  const [rows, size] = [5, 48];
  const weight = randomWeight(rng, rows, size);
  const h = calibrationHessian(rng, size, 200);
  for (const dead of [0, 17, 47]) for (let j = 0; j < size; j++) h.data[dead * size + j] = h.data[j * size + dead] = 0;
  for (const sym of [true, false]) {
    const result = quantizeGptq(weight, rows, size, h, { params: params(4, 16, sym), actOrder: true });
    assert.equal(result.deadColumns, [0, 17, 47]);
    const quantized = dequantize(result.tensor, { precision: "f32" });
    for (let n = 0; n < rows; n++) for (const dead of [0, 17, 47]) assert.is(Math.abs(quantized[n * size + dead]!), 0, `row ${n} column ${dead}`);
  }
});

structure("refusals: Hessian size, non-PD Hessian, bad options", () => {
  const rng = mulberry32(SEED + 4);
  const [rows, size] = [2, 8];
  const weight = randomWeight(rng, rows, size);
  const p = params(4, 8, true);
  const isFormat = (code: string) => (e: unknown) => e instanceof FormatError && e.code === code;
  const isUsage = (e: unknown) => e instanceof UsageError && e.code === "BAD_ARGUMENT";
  assert.throws(() => quantizeGptq(weight, rows, size, calibrationHessian(rng, size + 1, 20), { params: p }), isFormat("SHAPE_SIZE_MISMATCH"));
  const rankOne = { size, data: Float64Array.from({ length: size * size }, (_, t) => (1 + (t % size)) * (1 + Math.floor(t / size))) };
  assert.throws(() => quantizeGptq(weight, rows, size, rankOne, { params: p, percDamp: 0, layerName: "q_proj" }), (e: unknown) => isFormat("HESSIAN_NOT_PD")(e) && (e as FormatError).tensor === "q_proj");
  const h = calibrationHessian(rng, size, 20);
  assert.throws(() => quantizeGptq(weight, rows, size, h, { params: p, percDamp: -1 }), isUsage);
  assert.throws(() => quantizeGptq(weight, rows, size, h, { params: p, blockSize: 0 }), isUsage);
  assert.throws(() => quantizeGptq(weight, rows, size + 1, h, { params: p }), isUsage);
  const before = h.data.slice();
  quantizeGptq(weight, rows, size, h, { params: p, actOrder: true });
  assert.equal(h.data, before, "the caller's Hessian is not modified");
});

structure("degenerate shapes: no rows, one column", () => {
  const rng = mulberry32(SEED + 5);
  const none = quantizeGptq(new Float32Array(0), 0, 8, calibrationHessian(rng, 8, 20), { params: params(4, 4, false), actOrder: true });
  assert.is(none.tensor.codes.length, 0);
  assert.is(none.hessianLoss, 0);
  const weight = Float32Array.from([0.25, -1, 0.5]);
  const h = { size: 1, data: Float64Array.from([2]) };
  assertSameCodes(quantizeGptq(weight, 3, 1, h, { params: params(2, 1, true), actOrder: true }).tensor, quantizeRtn(weight, 3, 1, params(2, 1, true)), "K = 1");
});

structure.run();
