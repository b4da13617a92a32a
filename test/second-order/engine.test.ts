import { spawnSync } from "node:child_process";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { FormatError, UsageError } from "../../formats/errors.js";
import {
  actOrderPermutation,
  choleskyLower,
  dampHessian,
  fixDeadColumns,
  fromColumnMajor,
  gemmAdd,
  invertLowerTriangular,
  invertSpd,
  matmulAdd,
  prepareSecondOrder,
  runGptqLoop,
  toColumnMajor,
  upperCholeskyOfInverse,
  type ColumnQuantizer,
  type LoopView,
} from "../../formats/second-order/index.js";
import { mulberry32, type Rng } from "../helpers/prng.js";

/**
 * The second-order engine against explicit products and a direct, unblocked transcription of
 * GPTQ: every column's error is applied to all later columns at once (no blocks, no deferred
 * product), which is the algorithm the blocked loop must reproduce for any block size.
 */

const SEED = Number(process.env["LMPACK_ENGINE_SEED"] ?? 0x5ec0d) >>> 0;

/** H = XᵀX / samples + ridge·I, X with AR(1)-correlated features (x_j = z_j + 0.8·x_{j−1}). */
function correlatedHessian(rng: Rng, size: number, samples: number, ridge = 1e-3): Float64Array {
  const x = new Float64Array(samples * size);
  for (let t = 0; t < samples; t++) {
    for (let j = 0; j < size; j++) x[t * size + j] = rng() - 0.5 + (j > 0 ? 0.8 * x[t * size + j - 1]! : 0);
  }
  const h = new Float64Array(size * size);
  for (let t = 0; t < samples; t++) {
    for (let i = 0; i < size; i++) {
      const xi = x[t * size + i]! / samples;
      for (let j = 0; j < size; j++) h[i * size + j]! += xi * x[t * size + j]!;
    }
  }
  for (let i = 0; i < size; i++) h[i * size + i]! += ridge;
  return h;
}

function randomArray(rng: Rng, length: number): Float64Array {
  return Float64Array.from({ length }, () => rng() * 2 - 1);
}

/** A[m×k]·B[k×n] by the textbook triple loop; `bt` reads B as the transpose of a stored n×k matrix. */
function naiveProduct(a: Float64Array, b: Float64Array, m: number, k: number, n: number, bt = false): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += a[i * k + p]! * (bt ? b[j * k + p]! : b[p * n + j]!);
      c[i * n + j] = sum;
    }
  }
  return c;
}

function transpose(a: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

function maxAbsDiff(a: Float64Array, b: Float64Array): number {
  assert.is(a.length, b.length, "same length");
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

function identityError(product: Float64Array, n: number): number {
  let worst = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) worst = Math.max(worst, Math.abs(product[i * n + j]! - (i === j ? 1 : 0)));
  return worst;
}

function assertUpperZero(a: Float64Array, n: number, lower: boolean, label: string): void {
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) if ((lower ? j > i : j < i) && a[i * n + j] !== 0) assert.unreachable(`${label}: (${i}, ${j}) = ${a[i * n + j]} outside the triangle`);
  }
}

function expectFormatError(run: () => unknown, code: string): FormatError {
  try {
    run();
  } catch (error) {
    assert.instance(error, FormatError);
    assert.is((error as FormatError).code, code);
    return error as FormatError;
  }
  assert.unreachable(`expected FormatError ${code}`);
  throw new Error("unreachable");
}

// ---------------------------------------------------------------------------------------------

const products = suite(`second-order: dense products (seed ${SEED})`);

for (const [m, k, n] of [[1, 1, 1], [3, 5, 2], [4, 4, 4], [17, 257, 9], [130, 300, 1030], [5, 1, 1031]] as const) {
  products(`matmulAdd ${m}×${k}·${k}×${n} matches the triple loop`, () => {
    const rng = mulberry32(SEED + m * 7 + k * 13 + n);
    const a = randomArray(rng, m * k);
    const b = randomArray(rng, k * n);
    const c = randomArray(rng, m * n);
    const expected = naiveProduct(a, b, m, k, n).map((v, i) => c[i]! - 0.5 * v);
    matmulAdd(c, a, b, m, k, n, -0.5);
    assert.ok(maxAbsDiff(c, expected) < 1e-12 * k, `max error ${maxAbsDiff(c, expected)}`);
  });
}

products("gemmAdd reads strided and transposed views and writes only its window", () => {
  const rng = mulberry32(SEED + 1);
  const [m, k, n, stride] = [37, 70, 29, 101];
  const big = randomArray(rng, stride * 200);
  const before = big.slice();
  const a = randomArray(rng, m * k);
  const bStored = randomArray(rng, n * k); // B is the transpose of this n×k matrix
  const at = transpose(a, m, k);
  gemmAdd({ data: big, offset: 3 * stride + 5, rowStride: stride }, { data: at, offset: 0, rowStride: m, transposed: true }, { data: bStored, offset: 0, rowStride: k, transposed: true }, m, k, n, 2);
  const product = naiveProduct(a, bStored, m, k, n, true);
  for (let i = 0; i < 200; i++) {
    for (let j = 0; j < stride; j++) {
      const inside = i >= 3 && i < 3 + m && j >= 5 && j < 5 + n;
      const expected = before[i * stride + j]! + (inside ? 2 * product[(i - 3) * n + (j - 5)]! : 0);
      if (Math.abs(big[i * stride + j]! - expected) > 1e-12 * k) assert.unreachable(`(${i}, ${j}): ${big[i * stride + j]} vs ${expected}`);
    }
  }
});

products("without WebAssembly (node --jitless) the scalar tile gives bit-identical sums", () => {
  const [m, k, n] = [9, 300, 7];
  // Exactly representable inputs, generated the same way in both processes.
  const fill = (length: number, salt: number) => Float64Array.from({ length }, (_, i) => (((i * 7919 + salt) % 101) - 50) / 37);
  const expected = fill(m * n, 3);
  matmulAdd(expected, fill(m * k, 1), fill(k * n, 2), m, k, n, -0.75);
  const matmulUrl = new URL("../../formats/second-order/matmul.js", import.meta.url).href;
  const script = [
    `import { matmulAdd } from ${JSON.stringify(matmulUrl)};`,
    `const fill = ${fill.toString()};`,
    `const c = fill(${m * n}, 3);`,
    `matmulAdd(c, fill(${m * k}, 1), fill(${k * n}, 2), ${m}, ${k}, ${n}, -0.75);`,
    `process.stdout.write(JSON.stringify({ wasm: typeof WebAssembly, c: Array.from(c) }));`,
  ].join("\n");
  const child = spawnSync(process.execPath, ["--jitless", "--input-type=module", "-e", script], { encoding: "utf8" });
  assert.is(child.status, 0, child.stderr);
  const result = JSON.parse(child.stdout) as { wasm: string; c: number[] };
  assert.is(result.wasm, "undefined", "--jitless really has no WebAssembly");
  assert.equal(result.c, Array.from(expected));
});

products.run();

// ---------------------------------------------------------------------------------------------

const cholesky = suite(`second-order: Cholesky and inverses (seed ${SEED})`);

for (const size of [1, 2, 5, 63, 64, 65, 130, 300]) {
  cholesky(`size ${size}: L·Lᵀ = H, L·L⁻¹ = I, H·H⁻¹ = I, UᵀU = H⁻¹ with U = chol_upper(H⁻¹)`, () => {
    const rng = mulberry32(SEED + size);
    const h = correlatedHessian(rng, size, 2 * size + 8, 0.05);
    const hCopy = h.slice();
    const l = choleskyLower(h, size);
    assertUpperZero(l, size, true, "L");
    assert.ok(maxAbsDiff(naiveProduct(l, l, size, size, size, true), h) < 1e-12 * size, "L·Lᵀ = H");
    const lInverse = invertLowerTriangular(l, size);
    assertUpperZero(lInverse, size, true, "L⁻¹");
    assert.ok(identityError(naiveProduct(l, lInverse, size, size, size), size) < 1e-10, "L·L⁻¹ = I");
    const hInverse = invertSpd(h, size);
    assert.ok(identityError(naiveProduct(h, hInverse, size, size, size), size) < 1e-9, "H·H⁻¹ = I");
    assert.ok(maxAbsDiff(hInverse, transpose(hInverse, size, size)) === 0, "H⁻¹ is exactly symmetric");
    const u = upperCholeskyOfInverse(h, size);
    assertUpperZero(u, size, false, "U");
    for (let i = 0; i < size; i++) assert.ok(u[i * size + i]! > 0, "U has a positive diagonal");
    const scale = Math.max(...hInverse.map(Math.abs));
    assert.ok(maxAbsDiff(naiveProduct(transpose(u, size, size), u, size, size, size), hInverse) < 1e-10 * scale, "UᵀU = H⁻¹");
    // torch's route: cholesky(cholesky_inverse(cholesky(H)), upper=True).
    const viaTorchRoute = transpose(choleskyLower(hInverse, size), size, size);
    assert.ok(maxAbsDiff(u, viaTorchRoute) < 1e-9 * Math.sqrt(scale), "U matches the three-step route");
    assert.equal(h, hCopy, "inputs are not modified");
  });
}

cholesky("a matrix with a negative eigenvalue throws HESSIAN_NOT_PD naming the layer", () => {
  const h = Float64Array.from([4, 2, 0, 2, 1, 0, 0, 0, 3]); // rank-deficient 2×2 block: second pivot 0
  const error = expectFormatError(() => upperCholeskyOfInverse(h, 3, { layerName: "layers.0.q_proj" }), "HESSIAN_NOT_PD");
  assert.is(error.tensor, "layers.0.q_proj");
  expectFormatError(() => choleskyLower(Float64Array.from([1, 2, 2, 1]), 2), "HESSIAN_NOT_PD");
  expectFormatError(() => invertSpd(Float64Array.from([-1]), 1), "HESSIAN_NOT_PD");
  expectFormatError(() => choleskyLower(Float64Array.from([1, NaN, NaN, 1]), 2), "HESSIAN_NOT_PD");
});

cholesky("prepareSecondOrder: a singular Hessian without damping is refused, with damping accepted", () => {
  const size = 6;
  const v = Float64Array.from({ length: size }, (_, i) => i + 1);
  const h = Float64Array.from({ length: size * size }, (_, t) => v[Math.floor(t / size)]! * v[t % size]!); // v·vᵀ, rank 1
  const weight = new Float32Array(2 * size).fill(0.5);
  const error = expectFormatError(() => prepareSecondOrder(weight, 2, { size, data: h }, { percDamp: 0, actOrder: true, layerName: "mlp.up" }), "HESSIAN_NOT_PD");
  assert.is(error.tensor, "mlp.up");
  const prepared = prepareSecondOrder(weight, 2, { size, data: h }, { percDamp: 0.01 });
  assert.ok(prepared.damp > 0 && prepared.u.every(Number.isFinite));
});

cholesky.run();

// ---------------------------------------------------------------------------------------------

const prepare = suite(`second-order: preparation (seed ${SEED})`);

prepare("dead columns: H[c,c] = 1 and W[:,c] = 0, only where diag H = 0", () => {
  const rng = mulberry32(SEED + 2);
  const [size, rows] = [7, 3];
  const h = correlatedHessian(rng, size, 20);
  for (const dead of [1, 4]) for (let j = 0; j < size; j++) h[dead * size + j] = h[j * size + dead] = 0;
  const weight = Float32Array.from({ length: rows * size }, () => rng() + 0.5);
  const weightT = toColumnMajor(weight, rows, size);
  const hFixed = h.slice();
  assert.equal(fixDeadColumns(hFixed, size, weightT, rows), [1, 4]);
  for (let c = 0; c < size; c++) {
    const dead = c === 1 || c === 4;
    assert.is(hFixed[c * size + c], dead ? 1 : h[c * size + c]);
    for (let n = 0; n < rows; n++) assert.is(weightT[c * rows + n], dead ? 0 : Math.fround(weight[n * size + c]!));
  }
  const prepared = prepareSecondOrder(weight, rows, { size, data: h }, { actOrder: true });
  assert.equal(prepared.deadColumns, [1, 4]);
  const back = fromColumnMajor(prepared.weightT, rows, size, prepared.perm);
  for (let n = 0; n < rows; n++) for (let c = 0; c < size; c++) assert.is(back[n * size + c], c === 1 || c === 4 ? 0 : weight[n * size + c]);
});

prepare("damping adds percDamp · mean(diag H); act-order is a stable descending argsort of diag H", () => {
  const h = Float64Array.from([2, 0, 0, 0, 0, 5, 0, 0, 0, 0, 2, 0, 0, 0, 0, 7]);
  assert.equal(Array.from(actOrderPermutation(h, 4)), [3, 1, 0, 2]);
  const damped = h.slice();
  const damp = dampHessian(damped, 4, 0.1);
  assert.is(damp, 0.4);
  assert.equal([damped[0], damped[5], damped[10], damped[15]], [2.4, 5.4, 2.4, 7.4]);
});

prepare("toColumnMajor / fromColumnMajor round-trip with a permutation (non-tile sizes)", () => {
  const rng = mulberry32(SEED + 3);
  const [rows, cols] = [45, 70];
  const weight = Float32Array.from({ length: rows * cols }, () => rng());
  const perm = Int32Array.from({ length: cols }, (_, i) => (i * 17) % cols);
  const weightT = toColumnMajor(weight, rows, cols, perm);
  for (let i = 0; i < cols; i++) for (let n = 0; n < rows; n++) assert.is(weightT[i * rows + n], weight[n * cols + perm[i]!]);
  assert.equal(fromColumnMajor(weightT, rows, cols, perm), weight);
});

prepare("refusals: a Hessian or weight of the wrong size, a perm that is not a permutation", () => {
  const h = { size: 3, data: Float64Array.from([1, 0, 0, 0, 1, 0, 0, 0, 1]) };
  const weight = new Float32Array(6);
  expectFormatError(() => prepareSecondOrder(weight, 2, { size: 3, data: new Float64Array(8) }), "SHAPE_SIZE_MISMATCH");
  expectFormatError(() => prepareSecondOrder(new Float32Array(5), 2, h), "SHAPE_SIZE_MISMATCH");
  for (const perm of [[0, 1], [0, 1, 1], [0, 1, 3], [2, 1, 0, 3]]) {
    assert.throws(() => prepareSecondOrder(weight, 2, h, { perm: Int32Array.from(perm) }), (e: unknown) => e instanceof UsageError && e.code === "BAD_ARGUMENT", `perm ${perm}`);
  }
  assert.equal(Array.from(prepareSecondOrder(weight, 2, h, { perm: Int32Array.from([2, 0, 1]) }).perm!), [2, 0, 1]);
});

prepare("empty and single-column layers", () => {
  const empty = prepareSecondOrder(new Float32Array(0), 0, { size: 4, data: Float64Array.from({ length: 16 }, (_, t) => (t % 5 === 0 ? 2 : 0)) });
  assert.is(runGptqLoop(empty.weightT, empty.u, 0, 4, roundingQuantizer(1)).hessianLoss, 0);
  const single = prepareSecondOrder(Float32Array.from([0.3, -0.8]), 2, { size: 1, data: Float64Array.from([4]) }, { percDamp: 0 });
  assert.is(single.u[0], 0.5);
  const result = runGptqLoop(single.weightT, single.u, 2, 1, roundingQuantizer(0.5));
  assert.equal(Array.from(single.weightT), [0.5, -1]);
  assert.ok(Math.abs(result.hessianLoss - (0.2 ** 2 + 0.2 ** 2) / 0.25) < 1e-6, "Σ ((w − q)/U)² with w stored as float32");
  assert.equal(Array.from(upperCholeskyOfInverse(new Float64Array(0), 0)), []);
});

prepare.run();

// ---------------------------------------------------------------------------------------------

const loop = suite(`second-order: the column loop (seed ${SEED})`);

/** Uniform rounding to multiples of `step`, no groups. */
function roundingQuantizer(step: number): ColumnQuantizer {
  return {
    quantizeColumn(_column, current, quantized) {
      for (let n = 0; n < current.length; n++) quantized[n] = Math.round(current[n]! / step) * step;
    },
  };
}

/** Per-row min-max grid (2^bits levels) fitted at every multiple of groupSize over the next groupSize current columns. */
function groupQuantizer(bits: number, groupSize: number, size: number, read: (column: number, row: number) => number, rows: number): { quantizer: ColumnQuantizer; fit: (column: number) => void; quantize: (w: number, row: number) => number } {
  const levels = 2 ** bits - 1;
  const lo = new Float64Array(rows);
  const step = new Float64Array(rows);
  const fit = (column: number): void => {
    for (let n = 0; n < rows; n++) {
      let min = Infinity;
      let max = -Infinity;
      for (let c = column; c < Math.min(column + groupSize, size); c++) [min, max] = [Math.min(min, read(c, n)), Math.max(max, read(c, n))];
      lo[n] = min;
      step[n] = max > min ? (max - min) / levels : 1;
    }
  };
  const quantize = (w: number, n: number): number => lo[n]! + step[n]! * Math.min(levels, Math.max(0, Math.round((w - lo[n]!) / step[n]!)));
  const quantizer: ColumnQuantizer = {
    columnsRead: (column) => (column % groupSize === 0 ? groupSize : 1),
    quantizeColumn(column, current, quantized) {
      if (column % groupSize === 0) fit(column);
      for (let n = 0; n < current.length; n++) quantized[n] = quantize(current[n]!, n);
    },
  };
  return { quantizer, fit, quantize };
}

/** Unblocked GPTQ on W[N][K]: column c's scaled error goes to all later columns at once. */
function referenceGptq(weight: Float64Array, u: Float64Array, rows: number, size: number, groupSize: number, bits: number): { q: Float64Array; loss: number } {
  const w = weight.slice();
  const g = groupQuantizer(bits, groupSize, size, (c, n) => w[n * size + c]!, rows);
  let loss = 0;
  for (let c = 0; c < size; c++) {
    if (c % groupSize === 0) g.fit(c);
    for (let n = 0; n < rows; n++) {
      const q = g.quantize(w[n * size + c]!, n);
      const e = (w[n * size + c]! - q) / u[c * size + c]!;
      loss += e * e;
      w[n * size + c] = q;
      for (let j = c + 1; j < size; j++) w[n * size + j]! -= e * u[c * size + j]!;
    }
  }
  return { q: w, loss };
}

function loopOnCopy(weight: Float32Array, rows: number, size: number, u: Float64Array, makeQuantizer: (view: () => Float64Array) => ColumnQuantizer, blockSize: number) {
  const weightT = toColumnMajor(weight, rows, size);
  const result = runGptqLoop(weightT, u, rows, size, makeQuantizer(() => weightT), { blockSize, keepScaledErrors: true });
  return { ...result, q: fromColumnMajor(weightT, rows, size) };
}

for (const [rows, size, groupSize] of [[9, 45, 5], [16, 150, 32], [3, 130, 130]] as const) {
  loop(`N=${rows} K=${size} group ${groupSize}: block sizes 1, 7, 128 all equal unblocked GPTQ`, () => {
    const rng = mulberry32(SEED + size);
    const h = correlatedHessian(rng, size, 3 * size);
    const u = upperCholeskyOfInverse(h, size);
    const weight = Float32Array.from({ length: rows * size }, () => rng() * 2 - 1);
    const reference = referenceGptq(Float64Array.from(weight), u, rows, size, groupSize, 3);
    for (const blockSize of [1, 7, 128]) {
      const result = loopOnCopy(weight, rows, size, u, (weightT) => groupQuantizer(3, groupSize, size, (c, n) => weightT()[c * rows + n]!, rows).quantizer, blockSize);
      const worst = maxAbsDiff(Float64Array.from(result.q), Float64Array.from(reference.q, Math.fround));
      assert.ok(worst <= 1e-6, `block ${blockSize}: quantized weights differ by ${worst}`);
      assert.ok(Math.abs(result.hessianLoss - reference.loss) <= 1e-9 * reference.loss, `block ${blockSize}: loss ${result.hessianLoss} vs ${reference.loss}`);
      const errorSum = result.scaledErrorsT!.reduce((s, e) => s + e * e, 0);
      assert.ok(Math.abs(errorSum - result.hessianLoss) <= 1e-12 * result.hessianLoss, "scaled errors square-sum to the loss");
    }
  });
}

loop("a diagonal Hessian propagates nothing: the loop is plain rounding, exactly", () => {
  const rng = mulberry32(SEED + 4);
  const [rows, size] = [5, 40];
  const h = new Float64Array(size * size);
  for (let i = 0; i < size; i++) h[i * size + i] = 0.1 + rng();
  const u = upperCholeskyOfInverse(h, size);
  const weight = Float32Array.from({ length: rows * size }, () => rng() * 2 - 1);
  const result = loopOnCopy(weight, rows, size, u, () => roundingQuantizer(0.125), 7);
  assert.equal(result.q, weight.map((w) => Math.round(w / 0.125) * 0.125));
});

loop("on a correlated Hessian the loop beats rounding in tr(ΔW·H·ΔWᵀ)", () => {
  const rng = mulberry32(SEED + 5);
  const [rows, size] = [12, 64];
  const h = correlatedHessian(rng, size, 256);
  const weight = Float32Array.from({ length: rows * size }, () => rng() * 2 - 1);
  const prepared = prepareSecondOrder(weight, rows, { size, data: h });
  runGptqLoop(prepared.weightT, prepared.u, rows, size, roundingQuantizer(0.25));
  const gptq = fromColumnMajor(prepared.weightT, rows, size);
  const rtn = weight.map((w) => Math.round(w / 0.25) * 0.25);
  const [gptqError, rtnError] = [hessianError(weight, gptq, h, rows, size), hessianError(weight, rtn, h, rows, size)];
  assert.ok(gptqError < 0.5 * rtnError, `GPTQ ${gptqError} vs RTN ${rtnError}`);
});

loop("columnCount leaves the last columns unquantized but error-updated; bad options are UsageErrors", () => {
  const rng = mulberry32(SEED + 6);
  const [rows, size] = [4, 20];
  const u = upperCholeskyOfInverse(correlatedHessian(rng, size, 60), size);
  const weight = Float32Array.from({ length: rows * size }, () => rng() * 2 - 1);
  const weightT = toColumnMajor(weight, rows, size);
  const result = runGptqLoop(weightT, u, rows, size, roundingQuantizer(0.5), { columnCount: 15, blockSize: 4 });
  for (let i = 0; i < rows * size; i++) {
    const onGrid = Math.round(weightT[i]! / 0.5) * 0.5 === weightT[i];
    assert.ok(i < 15 * rows ? onGrid : weightT[i] !== Math.fround(weight[(i % rows) * size + Math.floor(i / rows)]!), `element ${i}`);
  }
  assert.is(result.columnLoss[17], 0);
  const oneBlock = toColumnMajor(weight, rows, size);
  runGptqLoop(oneBlock, u, rows, size, roundingQuantizer(0.5), { columnCount: 15, blockSize: 64 });
  assert.ok(maxAbsDiff(weightT, oneBlock) < 1e-12, "the kept columns get the same updates with any block size");
  for (const options of [{ blockSize: 0 }, { blockSize: 2.5 }, { columnCount: 21 }]) {
    assert.throws(() => runGptqLoop(weightT, u, rows, size, roundingQuantizer(0.5), options), (e: unknown) => e instanceof UsageError && e.code === "BAD_ARGUMENT");
  }
});

loop("the quantizer sees the current weights of the columns it reads, through the view", () => {
  const rng = mulberry32(SEED + 7);
  const [rows, size] = [3, 24];
  const u = upperCholeskyOfInverse(correlatedHessian(rng, size, 60), size);
  const weight = Float32Array.from({ length: rows * size }, () => rng() * 2 - 1);
  const seen: number[] = [];
  const quantizer: ColumnQuantizer = {
    columnsRead: (column) => (column === 5 ? 10 : 1),
    quantizeColumn(column, current, quantized, view: LoopView) {
      if (column === 5) seen.push(...view.weightT.subarray(5 * rows, 15 * rows));
      quantized.set(current.map((w) => Math.round(w * 4) / 4));
    },
  };
  const reference = loopOnCopy(weight, rows, size, u, () => quantizer, size);
  const expected = seen.splice(0);
  loopOnCopy(weight, rows, size, u, () => quantizer, 4);
  assert.ok(maxAbsDiff(Float64Array.from(seen), Float64Array.from(expected)) < 1e-12, "columns 5…14 are fully updated at column 5 with block size 4");
  assert.ok(reference.hessianLoss > 0);
});

loop.run();

/** tr(ΔW·H·ΔWᵀ) for row-major [rows][size] weights. */
function hessianError(weight: Float32Array, quantized: Float32Array, h: Float64Array, rows: number, size: number): number {
  let total = 0;
  for (let n = 0; n < rows; n++) {
    const delta = Float64Array.from({ length: size }, (_, c) => weight[n * size + c]! - quantized[n * size + c]!);
    for (let i = 0; i < size; i++) for (let j = 0; j < size; j++) total += delta[i]! * h[i * size + j]! * delta[j]!;
  }
  return total;
}
