import { suite } from "uvu";
import * as assert from "uvu/assert";
import { layerErrors } from "../../converters/int-group/layer-errors.js";
import { mulberry32 } from "../helpers/prng.js";

/** The blocked layer-error computation against the definition, written out as plain sums. */
const test = suite("int-group: layer errors");

for (const [N, K] of [[1, 1], [7, 5], [300, 33]] as const) {
  test(`${N}×${K}: weight MSE and tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) match the definition`, () => {
    const random = mulberry32(N * 1000 + K);
    const weight = Float32Array.from({ length: N * K }, () => random() - 0.5);
    const quantized = Float32Array.from(weight, (w) => w + (random() - 0.5) * 0.01);
    const x = Float64Array.from({ length: 40 * K }, () => random() - 0.5);
    const h = new Float64Array(K * K);
    for (let t = 0; t < 40; t++) for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) h[i * K + j]! += x[t * K + i]! * x[t * K + j]!;
    let mse = 0;
    let error = 0;
    let energy = 0;
    for (let n = 0; n < N; n++) {
      for (let i = 0; i < K; i++) {
        mse += (quantized[n * K + i]! - weight[n * K + i]!) ** 2 / (N * K);
        for (let j = 0; j < K; j++) {
          error += (quantized[n * K + i]! - weight[n * K + i]!) * h[i * K + j]! * (quantized[n * K + j]! - weight[n * K + j]!);
          energy += weight[n * K + i]! * h[i * K + j]! * weight[n * K + j]!;
        }
      }
    }
    const got = layerErrors(weight, quantized, N, K, { size: K, data: h });
    assert.ok(Math.abs(got.weightMse - mse) <= 1e-12 * mse, `MSE ${got.weightMse} vs ${mse}`);
    assert.ok(Math.abs(got.relativeOutputError! - error / energy) <= 1e-9 * (error / energy), `relative error ${got.relativeOutputError} vs ${error / energy}`);
    assert.is(layerErrors(weight, quantized, N, K, undefined).relativeOutputError, undefined);
  });
}

test.run();
