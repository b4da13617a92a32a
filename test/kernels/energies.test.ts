import * as assert from "uvu/assert";
import { cpuLayerEnergies, layerErrors } from "../../converters/int-group/layer-errors.js";
import { gpuLayerEnergies } from "../../kernels/linalg/energies-gpu.js";
import type { Hessian } from "../../formats/second-order/hessian.js";
import { mulberry32 } from "../helpers/prng.js";
import { gpuSuite } from "../helpers/gpu-suite.js";

/**
 * The quantizers' per-layer report on the GPU (kernels/linalg/energies-gpu.ts): tr(ΔW H ΔWᵀ) and
 * tr(W H Wᵀ) against the CPU's (converters/int-group/layer-errors.ts). The products are summed in
 * other orders, so the two agree within a rounding bound, not bit for bit: each inner product of
 * K terms errs by at most γ_K·Σ|H_ij·x_j|, and each side's outer sum of N·K terms by at most
 * γ_NK·Σ|x_i·p_i|, so |E_gpu − E_cpu| ≤ (2K + 2NK + 8)·2⁻⁵³·S with S = Σ_rows Σ_i |x_i|·Σ_j |H_ij·x_j|.
 */

interface Case {
  label: string;
  N: number;
  K: number;
  /** Bytes of X per product: small values cut the rows into several chunks. */
  chunkBytes?: number;
}

const CASES: Case[] = [
  { label: "37×53", N: 37, K: 53 },
  { label: "300×129 in chunks of 7 rows", N: 300, K: 129, chunkBytes: 2 * 129 * 8 * 7 },
  { label: "1×1", N: 1, K: 1 },
  { label: "256×384 (one product)", N: 256, K: 384 },
  { label: "384×1024 in chunks of 100 rows", N: 384, K: 1024, chunkBytes: 2 * 1024 * 8 * 100 },
];

/** W, a quantized Ŵ (W rounded to a 1/16 grid) and a PSD H = AᵀA / K. */
function layer(N: number, K: number, seed: number): { weight: Float32Array; quantized: Float32Array; hessian: Hessian } {
  const random = mulberry32(seed);
  const weight = Float32Array.from({ length: N * K }, () => random() * 2 - 1);
  const quantized = weight.map((w) => Math.round(w * 16) / 16);
  const a = Float64Array.from({ length: K * K }, () => random() * 2 - 1);
  const data = new Float64Array(K * K);
  for (let i = 0; i < K; i++) {
    for (let j = 0; j < K; j++) {
      let sum = 0;
      for (let p = 0; p < K; p++) sum += a[p * K + i]! * a[p * K + j]!;
      data[i * K + j] = sum / K;
    }
  }
  return { weight, quantized, hessian: { size: K, data } };
}

/** S of the bound for the rows x (W's or ΔW's). */
function absoluteSum(rows: Float64Array, h: Float64Array, N: number, K: number): number {
  let total = 0;
  for (let n = 0; n < N; n++) {
    for (let i = 0; i < K; i++) {
      let inner = 0;
      for (let j = 0; j < K; j++) inner += Math.abs(h[i * K + j]! * rows[n * K + j]!);
      total += Math.abs(rows[n * K + i]!) * inner;
    }
  }
  return total;
}

function within(label: string, gpu: number, cpu: number, s: number, N: number, K: number): void {
  const bound = (2 * K + 2 * N * K + 8) * 2 ** -53 * s;
  assert.ok(Math.abs(gpu - cpu) <= bound, `${label}: GPU ${gpu}, CPU ${cpu}, |Δ| ${Math.abs(gpu - cpu)} > bound ${bound}`);
}

const { gpu, available } = await gpuSuite("layer energies on the GPU");
if (available) {
  CASES.forEach((c, index) => {
    gpu(`${c.label}: tr(ΔW H ΔWᵀ) and tr(W H Wᵀ) equal the CPU's within the rounding bound`, ({ engine }) => {
      const { weight, quantized, hessian } = layer(c.N, c.K, 700 + index);
      const cpu = cpuLayerEnergies(weight, quantized, c.N, c.K, hessian);
      const got = gpuLayerEnergies(engine, c.chunkBytes)(weight, quantized, c.N, c.K, hessian);
      const w = Float64Array.from(weight);
      const delta = Float64Array.from(quantized, (q, i) => q - w[i]!);
      within(`${c.label} output`, got.outputEnergy, cpu.outputEnergy, absoluteSum(w, hessian.data, c.N, c.K), c.N, c.K);
      within(`${c.label} error`, got.errorEnergy, cpu.errorEnergy, absoluteSum(delta, hessian.data, c.N, c.K), c.N, c.K);
      assert.ok(cpu.errorEnergy > 0 && cpu.outputEnergy > cpu.errorEnergy, "the case must not be degenerate");
      // And through layerErrors, as the converters call it.
      const report = layerErrors(weight, quantized, c.N, c.K, hessian, gpuLayerEnergies(engine, c.chunkBytes));
      assert.ok(Math.abs(report.relativeOutputError! - cpu.errorEnergy / cpu.outputEnergy) <= 1e-12 * (cpu.errorEnergy / cpu.outputEnergy), `${c.label}: relative output error ${report.relativeOutputError}`);
    });
  });
  gpu("an unquantized layer has no error energy; a zero H has none of either", ({ engine }) => {
    const { weight, hessian } = layer(20, 31, 9);
    const same = gpuLayerEnergies(engine)(weight, weight, 20, 31, hessian);
    assert.is(same.errorEnergy, 0);
    assert.ok(same.outputEnergy > 0);
    const zero = gpuLayerEnergies(engine)(weight, weight.map((w) => w + 1), 20, 31, { size: 31, data: new Float64Array(31 * 31) });
    assert.equal(zero, { errorEnergy: 0, outputEnergy: 0 });
    assert.equal(gpuLayerEnergies(engine)(new Float32Array(0), new Float32Array(0), 0, 31, hessian), { errorEnergy: 0, outputEnergy: 0 });
  });
}
gpu.run();
