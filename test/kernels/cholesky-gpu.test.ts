import { suite } from "uvu";
import * as assert from "uvu/assert";
import { isLmpackError, type FormatError } from "../../formats/errors.js";
import { quantizeGptq } from "../../formats/int-group/quantizers/gptq.js";
import { gemmAdd, prepareSecondOrder, upperCholeskyOfInverse, type CholeskyOptions } from "../../formats/second-order/index.js";
import type { GpuEngine } from "../../kernels/engine.js";
import { gpuFactorize, upperCholeskyOfInverseGpu } from "../../kernels/linalg/cholesky-gpu.js";
import { gpuDeferredUpdates } from "../../kernels/linalg/gptq-deferred.js";
import { mulberry32 } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * GPTQ's factor U = chol_upper(H⁻¹) on the GPU (kernels/linalg/cholesky-gpu.ts), behind
 * prepareSecondOrder's `factorize` hook. On the CPU: the hook given the CPU function is the
 * default bit for bit, and the GPU function refuses impossible sizes before it touches the
 * engine. On a GPU: U equals the CPU's within a float64 bound that grows with the size and the
 * conditioning, a matrix that is not positive definite fails at the CPU's column, and GPTQ with
 * U and the deferred updates on the GPU gives the CPU's codes but for rounding ties.
 */

/**
 * H = XᵀX / samples + ridge·I for X with AR(1)-correlated features (x_j = z_j + φ·x_{j−1}), as
 * test/second-order/engine.test.ts `correlatedHessian`, through gemmAdd so that K = 4096 takes
 * seconds. Leading principal submatrices of it are Hessians of the same kind.
 */
function correlatedHessian(seed: number, size: number, samples: number, phi = 0.8, ridge = 1e-3): Float64Array {
  const rng = mulberry32(seed);
  const x = new Float64Array(samples * size);
  for (let t = 0; t < samples; t++) for (let j = 0; j < size; j++) x[t * size + j] = rng() - 0.5 + (j > 0 ? phi * x[t * size + j - 1]! : 0);
  const h = new Float64Array(size * size);
  gemmAdd({ data: h, offset: 0, rowStride: size }, { data: x, offset: 0, rowStride: size, transposed: true }, { data: x, offset: 0, rowStride: size }, size, samples, size, 1 / samples);
  for (let i = 0; i < size; i++) h[i * size + i]! += ridge;
  return h;
}

/** The leading size × size block of the n × n matrix h. */
function leading(h: Float64Array, n: number, size: number): Float64Array {
  const out = new Float64Array(size * size);
  for (let i = 0; i < size; i++) out.set(h.subarray(i * n, i * n + size), i * size);
  return out;
}

function bitIdentical(a: Float64Array, b: Float64Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

function caught(run: () => unknown): FormatError {
  try {
    run();
  } catch (error) {
    assert.ok(isLmpackError(error), String(error));
    return error as FormatError;
  }
  assert.unreachable("expected an error");
  throw new Error("unreachable");
}

/** The column a HESSIAN_NOT_PD error names. It is only in the message (the context holds the pivot). */
const namedColumn = (error: FormatError) => Number(/at column (\d+)/.exec(error.message)?.[1]);

const params = { bits: 4 as const, groupSize: 64, sym: false, scaleDtype: "F16" as const };

const host = suite("factorize hook (CPU)");

host("prepareSecondOrder and GPTQ: the CPU function given explicitly is bit-identical to the default", () => {
  const [rows, size] = [48, 200];
  const h = correlatedHessian(1, size, 2 * size);
  for (const j of [5, 131]) for (let i = 0; i < size; i++) h[j * size + i] = h[i * size + j] = 0; // dead columns
  const rng = mulberry32(2);
  const weight = Float32Array.from({ length: rows * size }, () => rng() - 0.5);
  for (const actOrder of [false, true]) {
    const seen: { size: number; options: CholeskyOptions }[] = [];
    const explicit = (m: Float64Array, n: number, options: CholeskyOptions) => {
      seen.push({ size: n, options });
      return upperCholeskyOfInverse(m, n, options);
    };
    const reference = prepareSecondOrder(weight, rows, { size, data: h }, { actOrder, layerName: "mlp.up" });
    const hooked = prepareSecondOrder(weight, rows, { size, data: h }, { actOrder, layerName: "mlp.up", factorize: explicit });
    assert.ok(bitIdentical(hooked.u, reference.u), "U");
    assert.ok(bitIdentical(hooked.weightT, reference.weightT), "weight");
    assert.equal(seen.map((s) => [s.size, s.options.layerName, s.options.columnLabels]), [[size, "mlp.up", reference.perm]], "one call, with the layer and the act-order labels");
    const gptq = quantizeGptq(weight, rows, size, { size, data: h }, { params, actOrder });
    const gptqHooked = quantizeGptq(weight, rows, size, { size, data: h }, { params, actOrder, factorize: upperCholeskyOfInverse });
    assert.ok(gptqHooked.tensor.codes.every((c, i) => c === gptq.tensor.codes[i]), "codes");
    assert.ok(gptqHooked.tensor.scales.every((s, i) => Object.is(s, gptq.tensor.scales[i])), "scales");
    assert.is(gptqHooked.hessianLoss, gptq.hessianLoss);
  }
});

/** An engine whose every use throws: refusals must come before any launch. */
const untouchable = new Proxy({}, { get: (_, key) => { throw new Error(`the host checks used engine.${String(key)}`); } }) as GpuEngine;

host("upperCholeskyOfInverseGpu refuses impossible sizes with LAUNCH_REFUSED before touching the engine; size 0 needs no GPU", () => {
  for (const [size, length] of [[-1, 1], [1.5, 4], [Number.NaN, 1], [3, 8], [2 ** 22 + 1, 0]] as const) {
    assert.is(caught(() => upperCholeskyOfInverseGpu(untouchable, new Float64Array(length), size)).code, "LAUNCH_REFUSED", `size ${size}, ${length} elements`);
  }
  assert.is(upperCholeskyOfInverseGpu(untouchable, new Float64Array(0), 0).length, 0);
});

host.run();

const { gpu, available } = await gpuSuite<{ h: Float64Array }>("upper Cholesky of the inverse on the GPU");
const SIZES = [1, 63, 64, 65, 200, 1024, 4096];
const LARGEST = SIZES[SIZES.length - 1]!;
/**
 * The bound: |U_gpu − U_cpu| ≤ c · K · 2⁻⁵² · κ₂(H) · max|U[i,·]| in every row i (GPTQ reads U
 * by rows, U[c, later] / U[c, c]), the first-order forward-error bound of a Cholesky factor and
 * a triangular inverse, with c = 1. κ₂ is estimated by power iteration (below). In emulation the
 * measured worst is about 1e-4 of the bound for κ₂ from 5e2 to 1e11: it tracks ε·κ₂.
 */
const BOUND_CONSTANT = 1;

/** κ₂(H) = λmax(H) · λmax(H⁻¹) by power iteration, H⁻¹·v as Uᵀ·(U·v): O(K²) a step, from below. */
function conditionEstimate(h: Float64Array, u: Float64Array, n: number, steps = 30): number {
  const largest = (apply: (v: Float64Array) => Float64Array) => {
    let v = Float64Array.from({ length: n }, (_, i) => 1 + (i % 7) / 7);
    let norm = 0;
    for (let s = 0; s < steps; s++) {
      const w = apply(v);
      norm = Math.sqrt(w.reduce((sum, x) => sum + x * x, 0));
      v = w.map((x) => x / norm);
    }
    return norm;
  };
  const timesH = (v: Float64Array) => {
    const w = new Float64Array(n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) w[i]! += h[i * n + j]! * v[j]!;
    return w;
  };
  const timesInverse = (v: Float64Array) => {
    const w = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let y = 0;
      for (let j = i; j < n; j++) y += u[i * n + j]! * v[j]!;
      for (let j = i; j < n; j++) w[j]! += u[i * n + j]! * y;
    }
    return w;
  };
  return largest(timesH) * largest(timesInverse);
}

if (available) {
  gpu.before((context) => {
    context.h = correlatedHessian(7, LARGEST, 2 * LARGEST);
  });
  const cases = [
    ...SIZES.map((size) => ({ name: `K = ${size}`, size, hessian: (largest: Float64Array) => leading(largest, LARGEST, size) })),
    // GPTQ on few calibration tokens: rank 256 + a small ridge.
    { name: "K = 1024 ill-conditioned (256 samples, φ = 0.95, ridge 1e-4)", size: 1024, hessian: () => correlatedHessian(8, 1024, 256, 0.95, 1e-4) },
  ];
  for (const c of cases) {
    gpu(`${c.name}: U equals the CPU's within c·K·2⁻⁵²·κ₂ per row; the input is left as it was`, ({ engine, h: largest }) => {
      const size = c.size;
      const h = c.hessian(largest);
      const copy = h.slice();
      const cpu = upperCholeskyOfInverse(h, size);
      const gpuU = upperCholeskyOfInverseGpu(engine, h, size);
      assert.ok(bitIdentical(h, copy), "H unchanged");
      let worst = 0;
      for (let i = 0; i < size; i++) {
        let scale = 0;
        let difference = 0;
        for (let j = 0; j < size; j++) {
          scale = Math.max(scale, Math.abs(cpu[i * size + j]!));
          difference = Math.max(difference, Math.abs(gpuU[i * size + j]! - cpu[i * size + j]!));
        }
        if (!gpuU.subarray(i * size, i * size + i).every((v) => Object.is(v, 0))) assert.unreachable(`row ${i} of U is not +0 below the diagonal`);
        worst = Math.max(worst, difference / scale);
      }
      const kappa = conditionEstimate(h, cpu, size);
      const bound = BOUND_CONSTANT * size * 2 ** -52 * kappa;
      console.log(`  ${c.name}: κ₂ ≈ ${kappa.toExponential(2)}, worst row-relative |U_gpu − U_cpu| ${worst.toExponential(3)}, bound ${bound.toExponential(3)}`);
      assert.ok(worst <= bound, `worst relative difference ${worst} > ${bound}`);
    });
  }

  gpu("only the upper triangle of H is read, as on the CPU", ({ engine, h: largest }) => {
    const size = 130;
    const h = leading(largest, LARGEST, size);
    const reference = upperCholeskyOfInverseGpu(engine, h, size);
    for (let i = 0; i < size; i++) for (let j = 0; j < i; j++) h[i * size + j] = Number.NaN;
    assert.ok(bitIdentical(upperCholeskyOfInverseGpu(engine, h, size), reference));
    assert.ok(upperCholeskyOfInverse(h, size).every(Number.isFinite));
  });

  const indefinite: { name: string; size: number; spoil(h: Float64Array, size: number): void }[] = [
    { name: "diag H[70] < 0 (mid-panel of J·H·J)", size: 200, spoil: (h, n) => void (h[70 * n + 70] = -h[70 * n + 70]!) },
    { name: "diag H[1] < 0 (first column of a panel of J·H·J)", size: 130, spoil: (h, n) => void (h[n + 1] = -1) },
    { name: "diag H[63] = 0 (the very first pivot)", size: 64, spoil: (h, n) => void (h[63 * n + 63] = 0) },
    { name: "H[30][60] NaN", size: 100, spoil: (h, n) => void (h[30 * n + 60] = h[60 * n + 30] = Number.NaN) },
    { name: "a negative 1×1", size: 1, spoil: (h) => void (h[0] = -1e-300) },
  ];
  for (const c of indefinite) {
    gpu(`not positive definite, ${c.name}: HESSIAN_NOT_PD at the CPU's column, with the layer`, ({ engine, h: largest }) => {
      const h = leading(largest, LARGEST, c.size);
      c.spoil(h, c.size);
      // Labels unlike the positions, as act-order gives: the column must go through them.
      const options = { layerName: "layers.7.mlp.down_proj", columnLabels: Int32Array.from({ length: c.size }, (_, i) => 1000 + 3 * i) };
      const onCpu = caught(() => upperCholeskyOfInverse(h, c.size, options));
      const onGpu = caught(() => upperCholeskyOfInverseGpu(engine, h, c.size, options));
      assert.is(onCpu.code, "HESSIAN_NOT_PD");
      assert.is(onGpu.code, "HESSIAN_NOT_PD", onGpu.message);
      assert.is(onGpu.tensor, "layers.7.mlp.down_proj");
      assert.is(namedColumn(onGpu), namedColumn(onCpu), `GPU: ${onGpu.message}; CPU: ${onCpu.message}`);
      assert.ok(!((onGpu.actual as number) > 0), "the reported pivot is not positive");
    });
  }

  gpu("GPTQ 1000×1536 4-bit g64 act-order, factorize and deferred updates on the GPU: the CPU's codes but for rounding ties, loss within 1e-9", ({ engine }) => {
    const [rows, size] = [1000, 1536];
    const h = correlatedHessian(3, size, 2 * size, 0.7);
    const rng = mulberry32(4);
    const weight = Float32Array.from({ length: rows * size }, () => rng() - 0.5);
    const cpu = quantizeGptq(weight, rows, size, { size, data: h }, { params, actOrder: true });
    const deferred = gpuDeferredUpdates(engine);
    try {
      const onGpu = quantizeGptq(weight, rows, size, { size, data: h }, { params, actOrder: true, factorize: gpuFactorize(engine), deferred });
      let differing = 0;
      for (let i = 0; i < cpu.tensor.codes.length; i++) if (cpu.tensor.codes[i] !== onGpu.tensor.codes[i]) differing++;
      console.log(`  ${differing} of ${cpu.tensor.codes.length} codes differ (rounding ties); loss CPU ${cpu.hessianLoss.toExponential(12)}, GPU ${onGpu.hessianLoss.toExponential(12)}`);
      assert.ok(differing <= cpu.tensor.codes.length * 1e-5, `${differing} codes differ`);
      assert.ok(Math.abs(onGpu.hessianLoss - cpu.hessianLoss) <= 1e-9 * cpu.hessianLoss, `loss ${onGpu.hessianLoss} vs ${cpu.hessianLoss}`);
    } finally {
      deferred.release();
    }
  });
}
gpu.run();
