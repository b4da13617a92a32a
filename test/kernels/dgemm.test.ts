import { suite } from "uvu";
import * as assert from "uvu/assert";
import { cublasCandidates, CUBLAS_SONAMES, type SearchEnv, type SearchFs } from "../../kernels/cuda/cublas.js";
import { GpuEngine, gpuAvailable } from "../../kernels/engine.js";
import { CUBLAS_MIN_VOLUME, gemmBackend, gemmF64, gemmF64With, type GemmF64Args } from "../../kernels/linalg/dgemm.js";
import { expectCode } from "../helpers/gpu-assert.js";
import { mulberry32 } from "../helpers/prng.js";

/**
 * The general float64 product on the device (kernels/linalg/dgemm.ts): cuBLAS's DGEMM when the
 * library is found (kernels/cuda/cublas.ts), lq_gemm_f64 otherwise.
 *
 * On the CPU: the library search on a stubbed file system, and the host's refusals. On a GPU,
 * with LMPACK_CUBLAS=off and with the search on: every transpose combination, odd sizes, padded
 * leading dimensions and alpha/beta variants against a CPU triple loop, within
 *
 *   |C_gpu − C_cpu| ≤ (k + 4) · 2⁻⁵² · (|alpha| · Σ_p |a_ip · b_pj| + |beta · c_ij|)
 *
 * Either side's sum of k products errs by at most γ_k · Σ|a·b| ≈ k · 2⁻⁵³ · Σ|a·b| whatever its
 * order (a loop, a tree, FMA or not), so the two differ by at most twice that; the final
 * alpha·s + beta·c adds at most 3 roundings per side, covered by the 4. beta = 0 cases start from
 * a C of NaN: C must then not be read. LMPACK_EXPECT_CUBLAS=1 makes a missing cuBLAS a failure.
 */

/** A stubbed file system: `files` exist, and folders are every prefix of them. */
function stubFs(files: string[]): SearchFs {
  const folders = new Map<string, Set<string>>();
  for (const file of files) {
    const parts = file.split("/");
    for (let i = 1; i < parts.length; i++) {
      const folder = parts.slice(0, i).join("/") || "/";
      if (!folders.has(folder)) folders.set(folder, new Set());
      folders.get(folder)!.add(parts[i]!);
    }
  }
  return { exists: (path) => files.includes(path) || folders.has(path), list: (path) => [...(folders.get(path) ?? [])] };
}

const search = (env: SearchEnv, files: string[]) => cublasCandidates(env, stubFs(files));
const candidates = (env: SearchEnv, files: string[]) => {
  const result = search(env, files);
  assert.ok("candidates" in result, JSON.stringify(result));
  return result.candidates;
};

const cpu = suite("cuBLAS search (stubbed file system)");

cpu("LMPACK_CUBLAS=off disables cuBLAS, whatever is installed", () => {
  assert.equal(search({ LMPACK_CUBLAS: "off" }, ["/usr/local/cuda/lib64/libcublas.so.12"]), { disabled: "LMPACK_CUBLAS=off" });
  assert.equal(search({ LMPACK_CUBLAS: "OFF" }, []), { disabled: "LMPACK_CUBLAS=off" });
});

cpu("nothing installed: only the bare sonames, for dlopen's own search", () => {
  assert.equal(candidates({ HOME: "/home/u" }, []), [...CUBLAS_SONAMES]);
});

cpu("LMPACK_CUBLAS comes first: a file even when missing (so its failure is reported), or a folder's sonames", () => {
  const files = ["/usr/local/cuda/lib64/libcublas.so.12", "/opt/blas/libcublas.so.11", "/opt/blas/libcublas.so.12"];
  assert.equal(candidates({ LMPACK_CUBLAS: "/nowhere/libcublas.so.12" }, files)[0], "/nowhere/libcublas.so.12");
  assert.equal(candidates({ LMPACK_CUBLAS: "/opt/blas" }, files).slice(0, 3), ["/opt/blas/libcublas.so.12", "/opt/blas/libcublas.so.11", "/usr/local/cuda/lib64/libcublas.so.12"]);
});

cpu("toolkit and system folders before Python's; newest soname first within a folder", () => {
  const venv = "/srv/venv/lib/python3.11/site-packages/nvidia/cublas/lib/libcublas.so.12";
  const files = [venv, "/usr/local/cuda/lib64/libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so.13", "/usr/lib/x86_64-linux-gnu/libcublas.so.11", "/cuda-home/lib64/libcublas.so.12"];
  assert.equal(candidates({ VIRTUAL_ENV: "/srv/venv", CUDA_HOME: "/cuda-home" }, files), [
    "/cuda-home/lib64/libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so.13", "/usr/local/cuda/lib64/libcublas.so.12",
    "/usr/lib/x86_64-linux-gnu/libcublas.so.11", venv, ...CUBLAS_SONAMES,
  ]);
});

cpu("PyTorch installs: pip wheels (nvidia/cublas/lib, nvidia/cu13/lib), torch/lib (hashed names too), user, system, conda", () => {
  const files = [
    "/home/u/.local/lib/python3.10/site-packages/nvidia/cublas/lib/libcublas.so.12",
    "/usr/local/lib/python3.12/dist-packages/nvidia/cu13/lib/libcublas.so.13",
    "/usr/local/lib/python3.9/dist-packages/torch/lib/libcublas-3b81d170.so.11",
    "/usr/local/lib/python3.9/dist-packages/torch/lib/libcublasLt-b6d14a74.so.11",
    "/opt/conda/lib/python3.11/site-packages/torch/lib/libcublas.so.12",
    "/opt/conda/lib/libcublas.so.12",
  ];
  assert.equal(candidates({ HOME: "/home/u" }, files), [
    "/opt/conda/lib/libcublas.so.12",
    "/opt/conda/lib/python3.11/site-packages/torch/lib/libcublas.so.12",
    "/home/u/.local/lib/python3.10/site-packages/nvidia/cublas/lib/libcublas.so.12",
    // python3.12 before python3.9: the newest interpreter first.
    "/usr/local/lib/python3.12/dist-packages/nvidia/cu13/lib/libcublas.so.13",
    "/usr/local/lib/python3.9/dist-packages/torch/lib/libcublas-3b81d170.so.11",
    ...CUBLAS_SONAMES,
  ]);
});

cpu("LD_LIBRARY_PATH folders and Debian's unversioned python3/dist-packages are searched", () => {
  const files = ["/libs/a/libcublas.so.12", "/usr/lib/python3/dist-packages/nvidia/cublas/lib/libcublas.so.12"];
  assert.equal(candidates({ LD_LIBRARY_PATH: "/libs/a::/libs/b" }, files).slice(0, 2), files);
});

cpu.run();

/** An engine that must not be touched: the refusals come before any device work. */
const untouchable = new Proxy({}, { get: (_, key) => assert.unreachable(`engine.${String(key)} used`) }) as unknown as GpuEngine;
const valid: GemmF64Args = { m: 5, n: 7, k: 3, alpha: 1, beta: 0, a: 0x1000n, lda: 3, b: 0x2000n, ldb: 7, c: 0x3000n, ldc: 7 };

const refusals = suite("gemmF64 refusals (no device needed)");
const refused: [string, Partial<GemmF64Args>][] = [
  ["negative m", { m: -1 }],
  ["fractional k", { k: 2.5 }],
  ["NaN alpha", { alpha: NaN }],
  ["infinite beta", { beta: Infinity }],
  ["lda < k", { lda: 2 }],
  ["lda < m with transA", { transA: true, lda: 4 }],
  ["ldb < n", { ldb: 6 }],
  ["ldb < k with transB", { transB: true, ldb: 2 }],
  ["ldc < n", { ldc: 6 }],
  ["a null A", { a: 0n }],
  ["a null C", { c: 0n }],
  ["more row tiles than gridDim.y", { m: 65536 * 64, lda: 3 }],
  ["a last element past 2^53", { m: 2 ** 20, n: 2 ** 40, ldb: 2 ** 40, ldc: 2 ** 40 }],
];
for (const [name, change] of refused) {
  refusals(`${name}: LAUNCH_REFUSED`, () => expectCode(() => gemmF64(untouchable, { ...valid, ...change }), "LAUNCH_REFUSED", name));
}
refusals("m = 0 or n = 0: nothing to do, no device touched; alpha = 0 or k = 0 needs no A or B", () => {
  gemmF64(untouchable, { ...valid, m: 0 });
  gemmF64(untouchable, { ...valid, n: 0, ldb: 1, ldc: 1 });
  expectCode(() => gemmF64(untouchable, { ...valid, alpha: 0, a: 0n, b: 0n, c: 0n }), "LAUNCH_REFUSED", "C is still written");
});
refusals.run();

interface Case {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  alpha: number;
  beta: number;
}

const SHAPES: [number, number, number][] = [[1, 1, 1], [67, 45, 33], [130, 7, 129], [65, 129, 200], [3, 70, 17], [1, 300, 5]];
/** Above CUBLAS_MIN_VOLUME, so that gemmF64 itself picks cuBLAS when there is one. */
const LARGE: [number, number, number] = [171, 150, 97];
const SCALARS: [number, number][] = [[1, 0], [-1, 1], [0.5, -2], [2.5, 0]];
const TRANSPOSES: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];

function cases(): Case[] {
  const all: Case[] = [];
  for (const [transA, transB] of TRANSPOSES) {
    for (const [m, n, k] of SHAPES) for (const [alpha, beta] of SCALARS) all.push({ m, n, k, transA, transB, alpha, beta });
    all.push({ m: LARGE[0], n: LARGE[1], k: LARGE[2], transA, transB, alpha: -1, beta: 1 });
  }
  return all;
}

const label = (c: Case) => `${c.m}×${c.n}×${c.k} ${c.transA ? "Aᵀ" : "A"}·${c.transB ? "Bᵀ" : "B"} alpha ${c.alpha} beta ${c.beta}`;
const bytesOf = (a: Float64Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Runs one case on `backend` ("auto": gemmF64's own choice) and checks it against the CPU loop. */
function check(engine: GpuEngine, c: Case, backend: "auto" | "cublas" | "own", seed: number): void {
  const rng = mulberry32(seed);
  const random = (length: number) => Float64Array.from({ length }, () => 2 * rng() - 1);
  // Padded leading dimensions: the padding must be neither read into C nor written.
  const [aRows, aColumns] = c.transA ? [c.k, c.m] : [c.m, c.k];
  const [bRows, bColumns] = c.transB ? [c.n, c.k] : [c.k, c.n];
  const [lda, ldb, ldc] = [aColumns + 3, bColumns + 1, c.n + 2];
  const a = random(aRows * lda);
  const b = random(bRows * ldb);
  const before = random(c.m * ldc);
  if (c.beta === 0) for (let i = 0; i < c.m; i++) before.fill(NaN, i * ldc, i * ldc + c.n);
  const context = engine.context;
  const [da, db, dc] = [context.upload(bytesOf(a)), context.upload(bytesOf(b)), context.upload(bytesOf(before))];
  const after = new Float64Array(before.length);
  try {
    const args: GemmF64Args = { ...c, a: da, lda, b: db, ldb, c: dc, ldc };
    if (backend === "auto") gemmF64(engine, args);
    else gemmF64With(engine, args, backend);
    context.download(dc, bytesOf(after));
  } finally {
    for (const pointer of [da, db, dc]) context.free(pointer);
  }
  const unit = 2 ** -52;
  for (let i = 0; i < c.m; i++) {
    for (let j = 0; j < ldc; j++) {
      const at = i * ldc + j;
      if (j >= c.n) {
        assert.ok(Object.is(after[at], before[at]), `${label(c)}: padding C[${i}][${j}] written`);
        continue;
      }
      let sum = 0;
      let magnitude = 0;
      for (let p = 0; p < c.k; p++) {
        const x = c.transA ? a[p * lda + i]! : a[i * lda + p]!;
        const y = c.transB ? b[j * ldb + p]! : b[p * ldb + j]!;
        sum += x * y;
        magnitude += Math.abs(x * y);
      }
      const old = c.beta === 0 ? 0 : before[at]!;
      const expected = c.alpha * sum + c.beta * old;
      const bound = (c.k + 4) * unit * (Math.abs(c.alpha) * magnitude + Math.abs(c.beta * old));
      const error = Math.abs(after[at]! - expected);
      assert.ok(error <= bound, `${label(c)} on ${backend}: C[${i}][${j}] = ${after[at]}, CPU ${expected}, |Δ| ${error} > bound ${bound}`);
    }
  }
}

const probe = await gpuAvailable();
for (const mode of ["off", "on"] as const) {
  const gpu = suite(`gemmF64 on the GPU, LMPACK_CUBLAS ${mode === "off" ? "off" : "unset (search)"}`, {} as { engine: GpuEngine; backend: string });
  if (!probe.ok) {
    gpu("GPU tests skipped", () => console.log(`  skipped: no GPU (${probe.reason})`));
    gpu.run();
    continue;
  }
  gpu.before(async (context) => {
    const saved = process.env.LMPACK_CUBLAS;
    if (mode === "off") process.env.LMPACK_CUBLAS = "off";
    else if (saved?.toLowerCase() === "off") delete process.env.LMPACK_CUBLAS;
    try {
      context.engine = await GpuEngine.open();
      // The engine decides on cuBLAS once, here, while the setting holds.
      context.backend = gemmBackend(context.engine);
    } finally {
      if (saved === undefined) delete process.env.LMPACK_CUBLAS;
      else process.env.LMPACK_CUBLAS = saved;
    }
    console.log(`  ${mode}: ${context.backend}`);
  });
  gpu.after(({ engine }) => engine.close());
  const found = (backend: string) => backend.startsWith("cublas ");
  gpu("the backend reported matches the setting", ({ backend, engine }) => {
    if (mode === "off") {
      assert.is(backend, "own kernel (LMPACK_CUBLAS=off)");
      expectCode(() => gemmF64With(engine, { m: 1, n: 1, k: 1, alpha: 1, beta: 0, a: 1n, lda: 1, b: 1n, ldb: 1, c: 1n, ldc: 1 }, "cublas"), "NO_DEVICE");
    } else if (process.env.LMPACK_EXPECT_CUBLAS === "1") {
      assert.ok(found(backend), `LMPACK_EXPECT_CUBLAS=1 but: ${backend}`);
    }
  });
  assert.ok(LARGE[0] * LARGE[1] * LARGE[2] >= CUBLAS_MIN_VOLUME);
  const backends = mode === "off" ? (["auto", "own"] as const) : (["auto", "cublas"] as const);
  for (const backend of backends) {
    gpu(`${backend}: 4 transpose combinations × ${SHAPES.length} odd shapes × ${SCALARS.length} alpha/beta, and ${LARGE.join("×")}, within (k + 4)·2⁻⁵²·Σ|a·b|`, (context) => {
      if (backend === "cublas" && !found(context.backend)) {
        console.log(`  cuBLAS cases skipped: ${context.backend}`);
        return;
      }
      cases().forEach((c, index) => check(context.engine, c, backend, 100 + index));
    });
  }
  gpu("alpha = 0 reads neither A nor B (gemmF64 keeps it on the own kernel): C = beta·C", ({ engine }) => {
    const [m, n, k] = LARGE;
    const context = engine.context;
    const c = Float64Array.from({ length: m * n }, (_, i) => i);
    const [da, db, dc] = [context.upload(bytesOf(new Float64Array(m * k).fill(NaN))), context.upload(bytesOf(new Float64Array(k * n).fill(NaN))), context.upload(bytesOf(c))];
    try {
      gemmF64(engine, { m, n, k, alpha: 0, beta: 0.5, a: da, lda: k, b: db, ldb: n, c: dc, ldc: n });
      const after = context.download(dc, new Uint8Array(m * n * 8));
      assert.ok(new Float64Array(after.buffer).every((v, i) => v === i * 0.5), "C ≠ beta·C");
    } finally {
      for (const pointer of [da, db, dc]) context.free(pointer);
    }
  });
  gpu.run();
}
