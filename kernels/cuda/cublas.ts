import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { basename, dirname, join } from "node:path";
import { KernelError } from "../../formats/errors.js";
import { check, driver, type CudaContext, type DevicePointer } from "./driver.js";

/**
 * cuBLAS (libcublas.so), found where CUDA toolkits, distributions, conda and PyTorch's wheels
 * put it, and loaded through koffi only when a product first asks for it: no toolkit is needed
 * at build or run time, and without the library the own kernels serve (kernels/linalg/dgemm.ts).
 *
 * Context and stream: cuBLAS runs on the CUDA runtime (linked statically into libcublas), which
 * uses the context current on the calling thread. That is the engine's: the device's primary
 * context, which cuda/driver.ts retains and makes current, and which is also the context the
 * runtime would create for itself. The handle's stream is the legacy default stream, the one
 * cuLaunchKernel(…, stream NULL, …) launches on, so cuBLAS calls and the own kernels run in
 * issue order, and the events of CudaContext.time() bracket both.
 *
 * LMPACK_CUBLAS: unset, the search below; "off", no cuBLAS; a path (a libcublas.so.N or a folder
 * holding one), tried before the search.
 */

/** Newest first: a 13 needs a CUDA 13 driver (580+); an older driver falls through to the 12. */
export const CUBLAS_SONAMES = ["libcublas.so.13", "libcublas.so.12", "libcublas.so.11"] as const;

/** The file system as the search sees it: injectable, so that tests can stub it. */
export interface SearchFs {
  exists(path: string): boolean;
  /** The names in folder `path`; [] when it is missing or unreadable. */
  list(path: string): string[];
}

export type SearchEnv = Partial<Record<"LMPACK_CUBLAS" | "CUDA_HOME" | "CUDA_PATH" | "LD_LIBRARY_PATH" | "VIRTUAL_ENV" | "CONDA_PREFIX" | "HOME", string>>;

/**
 * The libcublas files to try, in order, or why there are none to try. Pure given `fs`: absolute
 * paths that exist, then the bare sonames, which dlopen resolves through LD_LIBRARY_PATH and the
 * ld.so cache (a library in neither of the folders searched here, installed by a package manager).
 */
export function cublasCandidates(env: SearchEnv, fs: SearchFs, arch = "x86_64"): { disabled: string } | { candidates: string[] } {
  const setting = env.LMPACK_CUBLAS?.trim() ?? "";
  if (setting.toLowerCase() === "off") return { disabled: "LMPACK_CUBLAS=off" };
  const found: string[] = [];
  const add = (path: string) => {
    if (!found.includes(path) && fs.exists(path)) found.push(path);
  };
  const inFolder = (folder: string) => CUBLAS_SONAMES.forEach((soname) => add(join(folder, soname)));
  // A folder lists names; anything else is taken as the library file itself, kept even when
  // missing so that its load failure is reported rather than silently skipped.
  if (setting !== "" && fs.list(setting).length > 0) inFolder(setting);
  else if (setting !== "") found.push(setting);
  for (const home of [env.CUDA_HOME, env.CUDA_PATH]) if (home) inFolder(join(home, "lib64"));
  for (const folder of (env.LD_LIBRARY_PATH ?? "").split(":")) if (folder !== "") inFolder(folder);
  for (const folder of ["/usr/local/cuda/lib64", `/usr/local/cuda/targets/${arch}-linux/lib`, `/usr/lib/${arch}-linux-gnu`, "/usr/lib64"]) inFolder(folder);
  for (const prefix of [env.CONDA_PREFIX, "/opt/conda"]) if (prefix) inFolder(join(prefix, "lib"));
  for (const sitePackages of sitePackagesFolders(env, fs)) {
    // nvidia-cublas-cu11/cu12 wheels; CUDA 13 wheels put every library under nvidia/cu13/lib.
    inFolder(join(sitePackages, "nvidia", "cublas", "lib"));
    inFolder(join(sitePackages, "nvidia", "cu13", "lib"));
    // Wheels that bundle the library in torch/lib, with a hash in the name (auditwheel).
    const torchLib = join(sitePackages, "torch", "lib");
    inFolder(torchLib);
    const hashed = fs.list(torchLib).filter((name) => /^libcublas-[0-9a-f]+\.so\.\d+$/.test(name));
    for (const soname of CUBLAS_SONAMES) for (const name of hashed) if (name.endsWith(soname.slice("libcublas".length))) add(join(torchLib, name));
  }
  return { candidates: [...found, ...CUBLAS_SONAMES] };
}

/** Python's package folders, found without running Python: virtualenv, conda, user, system. */
export function sitePackagesFolders(env: SearchEnv, fs: SearchFs): string[] {
  const home = env.HOME ?? "";
  const roots = [env.VIRTUAL_ENV, env.CONDA_PREFIX, "/opt/conda", home === "" ? undefined : join(home, ".local"), "/usr/local", "/usr"];
  const folders: string[] = [];
  for (const root of roots) {
    if (!root) continue;
    const lib = join(root, "lib");
    // python3.12 before python3.9: the newest interpreter is the likeliest to hold a current torch.
    const versions = fs.list(lib).filter((name) => /^python3(\.\d+t?)?$/.test(name)).sort((x, y) => pythonMinor(y) - pythonMinor(x));
    for (const version of versions) for (const kind of ["site-packages", "dist-packages"]) folders.push(join(lib, version, kind));
  }
  return folders.filter((folder, i) => folders.indexOf(folder) === i && fs.exists(folder));
}

/** 12 for python3.12 and python3.12t (free-threaded); −1 for Debian's unversioned python3. */
const pythonMinor = (name: string) => Number.parseInt(name.split(".")[1] ?? "-1", 10);

const realFs: SearchFs = {
  exists: existsSync,
  list(path) {
    try {
      return readdirSync(path);
    } catch {
      return [];
    }
  },
};

/** cublasStatus_t names (cublas_api.h), for messages. */
const STATUS_NAMES: Record<number, string> = {
  0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
  7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
  13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
  16: "CUBLAS_STATUS_LICENSE_ERROR",
};
const CUBLAS_STATUS_ALLOC_FAILED = 3;
const CUBLAS_STATUS_INVALID_VALUE = 7;

/** Throws a KernelError naming `call` and the status unless it is CUBLAS_STATUS_SUCCESS. */
export function checkCublas(call: string, status: number): void {
  if (status === 0) return;
  const code = status === CUBLAS_STATUS_ALLOC_FAILED ? "OUT_OF_MEMORY" : status === CUBLAS_STATUS_INVALID_VALUE ? "LAUNCH_REFUSED" : "DRIVER_ERROR";
  throw new KernelError(code, `${call} failed with ${STATUS_NAMES[status] ?? "cublasStatus_t"} (${status})`, { actual: status });
}

type Fn = (...args: unknown[]) => number;
interface CublasLibrary {
  path: string;
  version: string;
  cublasCreate_v2: Fn;
  cublasDestroy_v2: Fn;
  cublasSetStream_v2: Fn;
  cublasDgemm_v2: Fn;
  cublasDgemmStridedBatched: Fn;
  cublasSgemm_v2: Fn;
}

const PROTOTYPES = {
  cublasCreate_v2: "int cublasCreate_v2(_Out_ cublasContext **handle)",
  cublasDestroy_v2: "int cublasDestroy_v2(cublasContext *handle)",
  cublasSetStream_v2: "int cublasSetStream_v2(cublasContext *handle, void *stream)",
  // Device pointers as uint64_t, as cuda/driver.ts passes CUdeviceptr: the same 8-byte integer argument.
  cublasDgemm_v2: "int cublasDgemm_v2(cublasContext *handle, int transa, int transb, int m, int n, int k, const double *alpha, uint64_t a, int lda, uint64_t b, int ldb, const double *beta, uint64_t c, int ldc)",
  // A batch of equal products at fixed strides (the forward's attention over a batch of windows); cuBLAS ≥ 8.
  cublasDgemmStridedBatched: "int cublasDgemmStridedBatched(cublasContext *handle, int transa, int transb, int m, int n, int k, const double *alpha, uint64_t a, int lda, int64_t strideA, uint64_t b, int ldb, int64_t strideB, const double *beta, uint64_t c, int ldc, int64_t strideC, int batchCount)",
  // Float32 products (the bf16 forward): without a math-mode call cuBLAS keeps TF32 off, so these are true float32.
  cublasSgemm_v2: "int cublasSgemm_v2(cublasContext *handle, int transa, int transb, int m, int n, int k, const float *alpha, uint64_t a, int lda, uint64_t b, int ldb, const float *beta, uint64_t c, int ldc)",
  cublasGetProperty: "int cublasGetProperty(int type, _Out_ int *value)",
} as const;

/** cublasOperation_t. */
const CUBLAS_OP_N = 0;
const CUBLAS_OP_T = 1;

interface Koffi {
  load(path: string): { func(prototype: string): unknown };
  opaque(name: string): unknown;
}
let koffi: Koffi | undefined;
/** Each library file loaded once per process (the handles are per engine), or why it could not be. */
const libraries = new Map<string, CublasLibrary | string>();

function loadLibrary(path: string): CublasLibrary | string {
  let library = libraries.get(path);
  if (library === undefined) {
    library = bind(path);
    libraries.set(path, library);
  }
  return library;
}

function bind(path: string): CublasLibrary | string {
  try {
    if (koffi === undefined) {
      koffi = createRequire(import.meta.url)("koffi") as Koffi;
      koffi.opaque("cublasContext");
    }
    // libcublas needs libcublasLt of the same version. Loaded first from the same folder, it is the
    // one dlopen then links to (a loaded library satisfies a dependency on its soname), whether or
    // not libcublas's RUNPATH names its own folder: the way PyTorch preloads its wheels' libraries.
    const lt = join(dirname(path), basename(path).replace(/^libcublas\./, "libcublasLt."));
    if (path.startsWith("/") && lt !== path && existsSync(lt)) koffi.load(lt);
    const lib = koffi.load(path);
    const bound = Object.fromEntries(Object.entries(PROTOTYPES).map(([name, prototype]) => [name, lib.func(prototype)])) as Record<keyof typeof PROTOTYPES, Fn>;
    // libraryPropertyType: MAJOR_VERSION 0, MINOR_VERSION 1, PATCH_LEVEL 2. (cublasGetVersion's single
    // number is major·1000 + minor·100 + patch before cuBLAS 12 and major·10000 + … since: ambiguous.)
    const parts = [0, 1, 2].map((type) => {
      const value = [0];
      checkCublas("cublasGetProperty", bound.cublasGetProperty(type, value));
      return value[0]!;
    });
    return { path, version: parts.join("."), ...bound };
  } catch (error) {
    return `${path}: ${(error as Error).message}`;
  }
}

/**
 * Devices whose primary context this module holds a reference to for the rest of the process.
 * The runtime inside cuBLAS keeps state (its loaded kernels, the handle's workspace) in the context
 * it first ran in; if the engine's close() released the last reference, the context would be
 * destroyed under that state, and a later engine would get a new context at the same device that
 * the runtime does not know. One extra retain keeps it alive: a process that opened cuBLAS keeps
 * the primary context until it exits, as any CUDA runtime program does.
 */
const pinned = new Set<number>();

function pinPrimaryContext(ordinal: number): void {
  if (pinned.has(ordinal)) return;
  const d = driver();
  const device = [0];
  check("cuDeviceGet", d.cuDeviceGet(device, ordinal));
  check("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain([null], device[0]));
  pinned.add(ordinal);
}

/** One cuBLAS handle, created in the engine's context, on the legacy default stream. */
export class CublasHandle {
  private constructor(private readonly library: CublasLibrary, private handle: unknown) {}

  get path(): string {
    return this.library.path;
  }

  /** "12.4.5". */
  get version(): string {
    return this.library.version;
  }

  static create(library: CublasLibrary, context: CudaContext): CublasHandle {
    pinPrimaryContext(context.info.ordinal);
    const out: unknown[] = [null];
    checkCublas("cublasCreate_v2", library.cublasCreate_v2(out));
    const handle = new CublasHandle(library, out[0]);
    try {
      // NULL: the legacy default stream, where cuda/module.ts launches (see the file comment).
      checkCublas("cublasSetStream_v2", library.cublasSetStream_v2(out[0], null));
    } catch (error) {
      handle.destroy();
      throw error;
    }
    return handle;
  }

  /**
   * Column-major DGEMM, C = alpha·op(A)·op(B) + beta·C with op(A) m×k, as cuBLAS takes it (the
   * row-major mapping is kernels/linalg/dgemm.ts's). Asynchronous, like a kernel launch.
   */
  dgemm(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number, a: DevicePointer, lda: number, b: DevicePointer, ldb: number, beta: number, c: DevicePointer, ldc: number): void {
    if (this.handle === null) throw new KernelError("LAUNCH_REFUSED", "cublasDgemm_v2 on a destroyed handle");
    const status = this.library.cublasDgemm_v2(this.handle, transA ? CUBLAS_OP_T : CUBLAS_OP_N, transB ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, Float64Array.of(alpha), a, lda, b, ldb, Float64Array.of(beta), c, ldc);
    checkCublas(`cublasDgemm_v2(${m}×${n}×${k}, lda ${lda}, ldb ${ldb}, ldc ${ldc})`, status);
  }

  /** `batch` column-major DGEMMs, product i on a + i·strideA, b + i·strideB, c + i·strideC (element strides). Asynchronous. */
  dgemmStridedBatched(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number, a: DevicePointer, lda: number, strideA: number, b: DevicePointer, ldb: number, strideB: number, beta: number, c: DevicePointer, ldc: number, strideC: number, batch: number): void {
    if (this.handle === null) throw new KernelError("LAUNCH_REFUSED", "cublasDgemmStridedBatched on a destroyed handle");
    const status = this.library.cublasDgemmStridedBatched(this.handle, transA ? CUBLAS_OP_T : CUBLAS_OP_N, transB ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, Float64Array.of(alpha), a, lda, BigInt(strideA), b, ldb, BigInt(strideB), Float64Array.of(beta), c, ldc, BigInt(strideC), batch);
    checkCublas(`cublasDgemmStridedBatched(${batch} × ${m}×${n}×${k}, lda ${lda}, ldb ${ldb}, ldc ${ldc})`, status);
  }

  /** Column-major SGEMM (float32 in and out, float32 accumulation), as dgemm. Asynchronous. */
  sgemm(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number, a: DevicePointer, lda: number, b: DevicePointer, ldb: number, beta: number, c: DevicePointer, ldc: number): void {
    if (this.handle === null) throw new KernelError("LAUNCH_REFUSED", "cublasSgemm_v2 on a destroyed handle");
    const status = this.library.cublasSgemm_v2(this.handle, transA ? CUBLAS_OP_T : CUBLAS_OP_N, transB ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, Float32Array.of(alpha), a, lda, b, ldb, Float32Array.of(beta), c, ldc);
    checkCublas(`cublasSgemm_v2(${m}×${n}×${k}, lda ${lda}, ldb ${ldb}, ldc ${ldc})`, status);
  }

  /** Frees the handle and its workspace; before the context is released. */
  destroy(): void {
    if (this.handle === null) return;
    const handle = this.handle;
    this.handle = null;
    checkCublas("cublasDestroy_v2", this.library.cublasDestroy_v2(handle));
  }
}

export type CublasAvailability = { ok: true; handle: CublasHandle } | { ok: false; reason: string };

/**
 * A cuBLAS handle for `context`, from the first candidate that loads and creates one (a library
 * too new for the driver fails at cublasCreate and the next is tried), or why there is none.
 */
export function openCublas(context: CudaContext, env: SearchEnv = process.env, fs: SearchFs = realFs): CublasAvailability {
  const search = cublasCandidates({ ...env, HOME: env.HOME ?? homedir() }, fs, process.arch === "arm64" ? "aarch64" : "x86_64");
  if ("disabled" in search) return { ok: false, reason: search.disabled };
  const failures: string[] = [];
  for (const path of search.candidates) {
    const library = loadLibrary(path);
    if (typeof library === "string") {
      // A bare soname that dlopen cannot find is the normal case, not a failure worth naming.
      if (path.includes("/")) failures.push(library);
      continue;
    }
    try {
      return { ok: true, handle: CublasHandle.create(library, context) };
    } catch (error) {
      failures.push(`${path}: ${(error as Error).message}`);
    }
  }
  const searched = "searched LMPACK_CUBLAS, CUDA_HOME, LD_LIBRARY_PATH, /usr/local/cuda, the system and conda library folders and Python's nvidia/cublas and torch/lib";
  return { ok: false, reason: failures.length === 0 ? `no libcublas found (${searched}; set LMPACK_CUBLAS=/path/to/libcublas.so.N)` : failures.join("; ") };
}
