import { suite } from "uvu";
import * as assert from "uvu/assert";
import type { SpqrTensor } from "../../formats/spqr/types.js";
import { pipelineCodeStride, pipelineStatBytes, pipelineStatistics } from "../../kernels/spqr/pipeline-layout.js";
import { mulberry32 } from "../helpers/prng.js";

/**
 * The statistics layout of the pipelined SpQR kernel (kernels/spqr/pipeline.cuh), built on the
 * host: every scale and zero code and every second-order statistic lands where the kernel's
 * comment says, padding included, and nothing else is written. CPU only (the GPU suite checks
 * the kernel's decode through it bit for bit).
 */
const test = suite("kernels/spqr: the pipelined kernel's statistics layout");

function tensor(m: number, n: number, beta1: number, beta2: number, seed: number): SpqrTensor {
  const rng = mulberry32(seed);
  const groups = n / beta2;
  const tiles = groups * (m / beta1);
  const bytes = (count: number) => Uint8Array.from({ length: count }, () => 1 + Math.floor(rng() * 255));
  const halves = (count: number) => Uint16Array.from({ length: count }, () => 1 + Math.floor(rng() * 0xfffe));
  return {
    params: { bits: 3, beta1, beta2 }, outFeatures: m, inFeatures: n, perm: Uint16Array.from({ length: n }, (_, j) => j),
    codes: new Uint8Array(m * n), scaleCodes: bytes(groups * m), zeroCodes: bytes(groups * m),
    scaleScale: halves(tiles), scaleZero: halves(tiles), zeroScale: halves(tiles), zeroZero: halves(tiles),
    outliers: { rowOffsets: new Int32Array(m + 1), cols: new Uint16Array(0), values: new Uint16Array(0) },
  };
}

for (const [m, n, beta1, beta2, rows] of [[64, 128, 16, 16, 4], [48, 96, 8, 32, 2], [32, 80, 16, 16, 4], [40, 48, 8, 16, 2]] as const) {
  test(`${m}×${n}, ${beta1}×${beta2} tiles, batches of ${rows} rows`, () => {
    const t = tensor(m, n, beta1, beta2, m * n + rows);
    const groups = n / beta2;
    const { scaleCodes, zeroCodes, stats } = pipelineStatistics(t, rows, groups);
    const stride = pipelineCodeStride(rows, groups);
    assert.is(stride % 16, 0);
    assert.ok(stride >= groups * rows && stride < groups * rows + 16);
    assert.is(scaleCodes.length, (m / rows) * stride);
    for (const [got, source, name] of [[scaleCodes, t.scaleCodes, "scale"], [zeroCodes, t.zeroCodes, "zero"]] as const) {
      for (let b = 0; b < m / rows; b++) {
        for (let at = 0; at < stride; at++) {
          const g = Math.floor(at / rows), i = at % rows;
          // Source codes are 1 … 255: a 0 here can only be padding.
          const expected = g < groups ? source[g * m + b * rows + i]! : 0;
          if (got[b * stride + at] !== expected) assert.unreachable(`${name} codes, batch ${b}, byte ${at}: expected ${expected}, got ${got[b * stride + at]}`);
        }
      }
    }
    const statGroups = pipelineStatBytes(groups) / 8;
    assert.is(statGroups % 2, 0);
    assert.is(stats.length, 4 * (m / beta1) * statGroups);
    const tileRows = m / beta1;
    for (let tile = 0; tile < tileRows; tile++) {
      for (let g = 0; g < statGroups; g++) {
        const k = g * tileRows + tile;
        const expected = g < groups ? [t.scaleScale[k], t.zeroScale[k], t.scaleZero[k], t.zeroZero[k]] : [0, 0, 0, 0];
        assert.equal([...stats.subarray(4 * (tile * statGroups + g), 4 * (tile * statGroups + g) + 4)], expected, `tile row ${tile}, group ${g}`);
      }
    }
  });
}

test.run();
