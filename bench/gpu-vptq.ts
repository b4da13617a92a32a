#!/usr/bin/env node
/**
 * VPTQ on one 7B-shaped layer on the GPU, against the CPU path in the same run:
 *
 *   node dist/bench/gpu-vptq.js [--shape 4096x11008] [--k 65536] [--res 256] [--init random]
 *                               [--kmeans-iters 100] [--cpu-iters 1] [--cpu-columns 32] [--cpu-vectors N]
 *                               [--loop resident|host]
 *
 * GPU: the whole quantizeVptq (v8, k main centroids, a residual codebook) with Lloyd's
 * iterations on kernels/kmeans, H's factorization on kernels/linalg, and the GPTQ loop either
 * resident on the GPU (kernels/second-order, the default: searches, takes and updates never
 * leave the device) or, with --loop host, on the host with the column searches and the deferred
 * updates on the GPU. Printed: total wall time and where it went.
 *
 * CPU: the whole layer takes hours here (bench/RESULTS.md: 52 min for a 4096×4096 layer at
 * k 65536), so the same run times the CPU path on pieces of the same work and checks them
 * against the GPU's: `--cpu-iters` Lloyd iterations of the main k-means from the same
 * initialisation (labels, centroids and objective must be bit-identical), and the column
 * searches of the first `--cpu-columns` columns. Per-piece speed-ups are measured; the CPU
 * total is not, and the table says so.
 *
 * Weights Gaussian-like with heavy-tailed entries; H = XᵀX of 256 random correlated rows + I
 * (bench/random-layer.ts). Init "random" is the reference's (cuML KMeans init='random');
 * k-means++ seeding runs on the CPU and takes minutes at k = 65536.
 */
import { benchHessian, benchRandom } from "./random-layer.js";
import { buildKdTree } from "../formats/vptq/kd-tree.js";
import { cpuCodebookSearch, type Codebook, type CodebookSearch } from "../formats/vptq/codebook.js";
import { cpuLloyd, weightedKMeans, type KMeansBackend, type KMeansInit } from "../formats/vptq/kmeans.js";
import { quantizeVptq } from "../formats/vptq/quantize.js";
import { GpuEngine } from "../kernels/engine.js";
import { gpuLloyd } from "../kernels/kmeans/lloyd-gpu.js";
import { gpuCodebookSearch } from "../kernels/kmeans/search-gpu.js";
import { gpuFactorize } from "../kernels/linalg/cholesky-gpu.js";
import { gpuDeferredUpdates } from "../kernels/linalg/gptq-deferred.js";
import { gpuVptqLoop } from "../kernels/second-order/vptq-columns-gpu.js";
import type { VptqResidentLoop } from "../formats/vptq/resident.js";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const [rows, columns] = arg("shape", "4096x11008").split("x").map(Number) as [number, number];
const k = Number(arg("k", "65536"));
const res = Number(arg("res", "256"));
const init = arg("init", "random") as KMeansInit;
const kmeansIterations = Number(arg("kmeans-iters", "100"));
const cpuIterations = Number(arg("cpu-iters", "1"));
const cpuColumns = Number(arg("cpu-columns", "32"));
/** Vectors of the k-means comparison (default: the layer's); fewer keep the CPU side short. */
const cpuVectors = Number(arg("cpu-vectors", "0"));
const loopKind = arg("loop", "resident");
if (loopKind !== "resident" && loopKind !== "host") throw new Error(`--loop resident|host, not ${loopKind}`);

const seconds = (from: number) => (performance.now() - from) / 1000;
let started = performance.now();
const random = benchRandom(rows * 31 + columns);
const weight = new Float32Array(rows * columns).map(() => random() * 0.04 * (random() > 0.495 ? 8 : 1));
const h = benchHessian(columns, random);
console.log(`inputs: ${rows}×${columns} weight and H in ${seconds(started).toFixed(1)} s`);

const engine = await GpuEngine.open();
const timing = { lloyd: 0, lloydCalls: 0, search: 0, searchCalls: 0, loop: 0, loopCalls: 0 };
const lloyd = gpuLloyd(engine);
const timedLloyd: KMeansBackend = {
  description: lloyd.description,
  lloyd(set, centroids, options) {
    const t = performance.now();
    let last = t;
    const trace: string[] = [];
    const onIteration = (iteration: number, objective: number, searched: number) => {
      const now = performance.now();
      if (iteration < 3 || iteration % 10 === 0) trace.push(`${iteration}: ${searched} searched, ${(now - last).toFixed(0)} ms`);
      last = now;
    };
    const out = lloyd.lloyd(set, centroids, { ...options, onIteration });
    console.log(`k-means k ${options.k} over ${set.count} vectors: ${trace.join("; ")}`);
    timing.lloyd += seconds(t);
    timing.lloydCalls++;
    return out;
  },
};
const search = gpuCodebookSearch(engine);
const timedSearch: CodebookSearch = {
  description: search.description,
  nearest(...args) {
    const t = performance.now();
    search.nearest(...args);
    timing.search += seconds(t);
    timing.searchCalls++;
  },
};
const deferred = gpuDeferredUpdates(engine);
const resident = gpuVptqLoop(engine);
const timedLoop: VptqResidentLoop = {
  description: resident.description,
  accepts: (params) => resident.accepts(params),
  run(...args) {
    const t = performance.now();
    const out = resident.run(...args);
    timing.loop += seconds(t);
    timing.loopCalls++;
    return out;
  },
};
started = performance.now();
const result = quantizeVptq(weight, rows, columns, { size: columns, data: h }, {
  vectorLen: 8, numCentroids: k, numResCentroids: res, kmeansInit: init, kmeansIterations,
  kmeansBackend: timedLloyd, codebookSearch: timedSearch, deferred, factorize: gpuFactorize(engine),
  ...(loopKind === "resident" ? { residentLoop: timedLoop } : {}),
});
const gpuTotal = seconds(started);
deferred.release();
search.release();
const books = result.codebooks.map((c) => `${c.role} ${c.objectives.length} iterations${c.converged ? " (converged)" : ""}, ${c.reseeded} re-seeded`).join("; ");
console.log(`\n# VPTQ v8 k${k} + residual ${res}, ${rows}×${columns}, init ${init}, ${loopKind} GPTQ loop, on ${engine.describe()} (${new Date().toISOString().slice(0, 10)})\n`);
console.log(`codebooks: ${books}; Hessian loss ${result.hessianLoss.toExponential(6)}\n`);
console.log("| part | GPU s | notes |");
console.log("|---|---|---|");
console.log(`| whole layer (quantizeVptq) | ${gpuTotal.toFixed(2)} | goal ≤ 30 s |`);
console.log(`| k-means: init on the CPU (${init}) + Lloyd on the GPU | ${timing.lloyd.toFixed(2)} (Lloyd) | ${timing.lloydCalls} codebooks |`);
if (loopKind === "resident") {
  console.log(`| GPTQ loop resident on the GPU (searches, takes, in-block and deferred updates, uploads and downloads) | ${timing.loop.toFixed(2)} | ${timing.loopCalls} passes × ${columns} columns: ${((timing.loop / Math.max(1, timing.loopCalls * columns)) * 1e6).toFixed(0)} µs a column |`);
  console.log(`| the rest (norm, act-order, factorization) | ${(gpuTotal - timing.lloyd - timing.loop).toFixed(2)} | |`);
} else {
  console.log(`| column searches | ${timing.search.toFixed(2)} | ${timing.searchCalls} columns, main + residual |`);
  console.log(`| the rest (norm, act-order, factorization, GPTQ loop's in-block work on the CPU, deferred updates) | ${(gpuTotal - timing.lloyd - timing.search).toFixed(2)} | |`);
}

// CPU pieces on the same kind of data: the main k-means's first iterations from one init.
const full = Math.floor(rows / 8);
const count = cpuVectors > 0 ? Math.min(cpuVectors, full * columns) : full * columns;
const vectors = new Float64Array(count * 8).map(() => random() * 0.04 * (random() > 0.495 ? 8 : 1));
const weights = new Float64Array(count).map(() => 1 + random());
const data = { vectors, count, dim: 8, weights };
const options = { k, init, seed: 0, maxIterations: cpuIterations, tolerance: 0 };
started = performance.now();
const onGpu = weightedKMeans(data, { ...options, backend: lloyd });
const gpuLloydSeconds = seconds(started);
started = performance.now();
const onCpu = weightedKMeans(data, { ...options, backend: cpuLloyd });
const cpuLloydSeconds = seconds(started);
const labelsDiffer = onGpu.labels.reduce((n, l, i) => n + (l === onCpu.labels[i] ? 0 : 1), 0);
const centroidsDiffer = onGpu.centroids.reduce((n, c, i) => n + (Object.is(c, onCpu.centroids[i]) ? 0 : 1), 0);
console.log(`\n| CPU piece (same run) | CPU s | GPU s | speed-up | GPU = CPU |`);
console.log("|---|---|---|---|---|");
console.log(`| k-means, ${count} vectors × 8, k ${k}: init + ${cpuIterations} Lloyd iteration(s) | ${cpuLloydSeconds.toFixed(2)} | ${gpuLloydSeconds.toFixed(2)} | ${(cpuLloydSeconds / gpuLloydSeconds).toFixed(0)}× | ${labelsDiffer} labels and ${centroidsDiffer} centroid coordinates differ; objectives ${onGpu.objectives.every((o, i) => o === onCpu.objectives[i]) ? "identical" : "differ"} |`);

// Column searches: the trained codebook against the first columns' vectors.
const values = onCpu.centroids;
const book: Codebook = { k, vectorLen: 8, bits: new Uint16Array(k * 8), values, tree: buildKdTree(values, k, 8) };
const mainCpu = new Int32Array(full);
const mainGpu = new Int32Array(full);
const columnSearch = gpuCodebookSearch(engine);
let differ = 0;
let [cpuSearchSeconds, gpuSearchSeconds] = [0, 0];
for (let c = 0; c < cpuColumns; c++) {
  const queries = vectors.subarray(c * full * 8, (c + 1) * full * 8);
  let t = performance.now();
  cpuCodebookSearch.nearest(book, undefined, queries, full, 8, mainCpu, undefined);
  cpuSearchSeconds += seconds(t);
  t = performance.now();
  columnSearch.nearest(book, undefined, queries, full, 8, mainGpu, undefined);
  gpuSearchSeconds += seconds(t);
  for (let v = 0; v < full; v++) if (mainCpu[v] !== mainGpu[v]) differ++;
}
columnSearch.release();
console.log(`| column searches, ${cpuColumns} columns × ${full} vectors, k ${k} | ${cpuSearchSeconds.toFixed(2)} | ${gpuSearchSeconds.toFixed(3)} | ${(cpuSearchSeconds / gpuSearchSeconds).toFixed(0)}× | ${differ} indices differ |`);
console.log(`\nCPU path for the whole layer, extrapolated from these pieces (not measured): at least ${((cpuSearchSeconds / cpuColumns) * 2 * columns / 60).toFixed(0)} min of column searches alone (2 passes × ${columns} columns), plus k-means.`);
engine.close();
