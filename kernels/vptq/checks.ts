import { KernelError } from "../../formats/errors.js";
import { vectorRows, type VptqTensor } from "../../formats/vptq/types.js";
import type { VptqGpuOptions } from "./launch.js";

/**
 * Host-side checks before any launch of kernels/vptq/vptq.cu (LAUNCH_REFUSED, before any device
 * call): every length, every index below its codebook, the permutation a permutation, the outlier
 * and group columns adding up to in_features. Also narrows the indices to uint16 and inverts the
 * permutation, the fields as the kernel takes them. launch.ts runs the launch itself.
 */

/** LQ_VPTQ_CUDA / LQ_VPTQ_TORCH in vptq.cuh. */
export const SEMANTICS = { cuda: 0, torch: 1 } as const;
/** VPTQ codebooks hold at most 65536 centroids (16-bit indices, hf-layout.ts), so indices travel as uint16: half the tensor's uint32. */
const MAX_CENTROIDS = 65536;
/** VPTQ stores perm as uint16, and the kernel gets its inverse as uint16. */
const MAX_IN_FEATURES = 65536;

/** What the kernel receives (vptq.cuh): the tensor's arrays, its indices narrowed to uint16, the inverse permutation. */
export interface VptqKernelFields {
  tensor: VptqTensor;
  mainIndices: Uint16Array;
  resIndices: Uint16Array | undefined;
  /** invPerm[j] = k where perm[k] = j: the Q column of original column j. */
  invPerm: Uint16Array | undefined;
}

type Refuse = (detail: string, expected: unknown, actual: unknown) => KernelError;

/** "4096×11008 v8 k65536-256 G2 outliers 64", for messages. */
export function describe(t: VptqTensor): string {
  const p = t.params;
  return `${t.outFeatures}×${t.inFeatures} v${p.vectorLen} k${p.numCentroids}${p.numResCentroids > 0 ? `-${p.numResCentroids}` : ""}${p.groupNum > 1 ? ` G${p.groupNum}` : ""}${p.outlierSize > 0 ? ` outliers ${p.outlierSize}` : ""}`;
}

function refuser(t: VptqTensor, tensorName: string | undefined): Refuse {
  return (detail, expected, actual) => new KernelError("LAUNCH_REFUSED", `vptq ${describe(t)}: ${detail}`, { tensor: tensorName, expected, actual });
}

/**
 * Every check of the launch, cheapest first (LAUNCH_REFUSED, before any device call), and the
 * fields as the kernel takes them. Exported for the tests of the kernel's own checks.
 */
export function prepareVptqLaunch(t: VptqTensor, options: Pick<VptqGpuOptions, "semantics" | "tensorName"> = {}): VptqKernelFields {
  const refuse = refuser(t, options.tensorName);
  checkShape(t, options.semantics, refuse);
  const p = t.params;
  const numIdx = vectorRows(t.outFeatures, p.vectorLen);
  const indexCount = p.groupNum * numIdx * p.groupSize;
  const indices = (a: Uint32Array | undefined) => a instanceof Uint32Array && a.length === indexCount;
  if (!indices(t.mainIndices) || (t.resIndices !== undefined && !indices(t.resIndices))) throw refuse("main / residual indices must be Uint32Array [G · ceil(out / vl) · gs]", indexCount, [t.mainIndices?.length, t.resIndices?.length]);
  checkArrays(t, refuse);
  const narrow = (a: Uint32Array, k: number, what: string) => {
    const out = new Uint16Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const q = a[i]!;
      if (!(q < k)) throw refuse(`${what} index ${q} at [g, r, e] = [${Math.floor(i / (numIdx * p.groupSize))}, ${Math.floor(i / p.groupSize) % numIdx}, ${i % p.groupSize}] is past its codebook`, `< ${k}`, q);
      out[i] = q;
    }
    return out;
  };
  const mainIndices = narrow(t.mainIndices, p.numCentroids, "main");
  const resIndices = t.resIndices === undefined ? undefined : narrow(t.resIndices, p.numResCentroids, "residual");
  if (t.outlierIndices !== undefined) {
    const at = t.outlierIndices.findIndex((q) => !(q < p.outlierNumCentroids));
    if (at >= 0) throw refuse(`outlier index ${t.outlierIndices[at]} at [row block, column] = [${Math.floor(at / p.outlierSize)}, ${at % p.outlierSize}] is past the outlier codebook`, `< ${p.outlierNumCentroids}`, t.outlierIndices[at]);
  }
  return { tensor: t, mainIndices, resIndices, invPerm: t.perm === undefined ? undefined : invertPermutation(t.perm, refuse) };
}

/** The parameters against each other, the semantics, and which arrays are present. */
function checkShape(t: VptqTensor, semantics: string | undefined, refuse: Refuse): void {
  const p = t.params;
  if (semantics !== undefined && !Object.hasOwn(SEMANTICS, semantics)) throw refuse("semantics", Object.keys(SEMANTICS), semantics);
  const int = (v: number, min: number, max: number) => Number.isSafeInteger(v) && v >= min && v <= max;
  if (!int(t.outFeatures, 1, Number.MAX_SAFE_INTEGER) || !int(t.inFeatures, 1, MAX_IN_FEATURES)) throw refuse("out_features ≥ 1 and 1 ≤ in_features ≤ 65536 (perm is uint16)", "positive sizes", [t.outFeatures, t.inFeatures]);
  if (t.dtype !== "F16" && t.dtype !== "BF16") throw refuse("codebook dtype", "F16 or BF16", t.dtype);
  if (!int(p.vectorLen, 1, Number.MAX_SAFE_INTEGER) || !int(p.numCentroids, 1, MAX_CENTROIDS) || !int(p.numResCentroids, 0, MAX_CENTROIDS)) throw refuse("vector length ≥ 1, 1 … 65536 centroids, 0 … 65536 residual centroids", "VPTQ sizes", [p.vectorLen, p.numCentroids, p.numResCentroids]);
  if (!int(p.groupNum, 1, t.inFeatures) || !int(p.groupSize, 0, t.inFeatures) || !int(p.outlierSize, 0, t.inFeatures) || p.groupNum * p.groupSize + p.outlierSize !== t.inFeatures) {
    throw refuse("outlier columns plus group_num · group_size must equal in_features", t.inFeatures, `${p.outlierSize} + ${p.groupNum}·${p.groupSize}`);
  }
  if (p.outlierSize > 0 && (!int(p.outlierVectorLen, 1, Number.MAX_SAFE_INTEGER) || !int(p.outlierNumCentroids, 1, MAX_CENTROIDS))) throw refuse("outliers need a vector length ≥ 1 and 1 … 65536 centroids", "outlier sizes", [p.outlierVectorLen, p.outlierNumCentroids]);
  // The reference decides by presence (t.resIndices, t.perm), the parameters by flags: both must agree.
  const presence: [string, boolean, unknown][] = [
    ["centroids", true, t.centroids],
    ["main indices", true, t.mainIndices],
    ["res_centroids", p.numResCentroids > 0, t.resCentroids],
    ["residual indices", p.numResCentroids > 0, t.resIndices],
    ["outlier centroids", p.outlierSize > 0, t.outlierCentroids],
    ["outlier indices", p.outlierSize > 0, t.outlierIndices],
    ["perm", p.enablePerm, t.perm],
    ["weight_scale", p.enableNorm, t.weightScale],
    ["weight_bias", p.enableNorm, t.weightBias],
  ];
  for (const [what, expected, array] of presence) if (expected !== (array !== undefined)) throw refuse(`${what} ${expected ? "missing" : "present"}, against the parameters`, expected ? "present" : "absent", array === undefined ? "absent" : "present");
}

/** Every 16-bit array the kernel reads: a Uint16Array of exactly the length the shape implies. */
function checkArrays(t: VptqTensor, refuse: Refuse): void {
  const p = t.params;
  const expect: [string, Uint16Array | undefined, number][] = [
    ["centroids", t.centroids, p.groupNum * p.numCentroids * p.vectorLen],
    ["res_centroids", t.resCentroids, p.groupNum * p.numResCentroids * p.vectorLen],
    ["outlier centroids", t.outlierCentroids, p.outlierNumCentroids * p.outlierVectorLen],
    ["outlier indices", t.outlierIndices, p.outlierSize > 0 ? vectorRows(t.outFeatures, p.outlierVectorLen) * p.outlierSize : 0],
    ["perm", t.perm, t.inFeatures],
    ["weight_scale", t.weightScale, t.inFeatures],
    ["weight_bias", t.weightBias, t.inFeatures],
  ];
  for (const [what, array, length] of expect) {
    if (array !== undefined && !(array instanceof Uint16Array && array.length === length)) throw refuse(`${what} must be a Uint16Array of ${length}`, length, array.length);
  }
}

function invertPermutation(perm: Uint16Array, refuse: Refuse): Uint16Array {
  const inverse = new Uint16Array(perm.length);
  const seen = new Uint8Array(perm.length);
  for (let k = 0; k < perm.length; k++) {
    const j = perm[k]!;
    if (!(j < perm.length) || seen[j] === 1) throw refuse(`perm is not a permutation: entry ${k} is ${j}${j < perm.length ? " again" : ""}`, `a permutation of 0…${perm.length - 1}`, j);
    seen[j] = 1;
    inverse[j] = k;
  }
  return inverse;
}

/**
 * launchVptqKernel's checks of prepared fields: the shape and every length again (cheap), the
 * prepared arrays against the tensor, and the reference's length. Index values are left to the
 * kernel's own checks, which is what the tests of its status word need.
 */
export function checkPreparedLaunch(fields: VptqKernelFields, options: VptqGpuOptions): void {
  const t = fields.tensor;
  const p = t.params;
  const refuse = refuser(t, options.tensorName);
  checkShape(t, options.semantics, refuse);
  checkArrays(t, refuse);
  const indexCount = p.groupNum * vectorRows(t.outFeatures, p.vectorLen) * p.groupSize;
  const narrowed = (a: Uint16Array | undefined, present: boolean, length: number) => (a === undefined ? !present : a instanceof Uint16Array && a.length === length);
  if (!narrowed(fields.mainIndices, true, indexCount) || !narrowed(fields.resIndices, t.resIndices !== undefined, indexCount) || !narrowed(fields.invPerm, t.perm !== undefined, t.inFeatures)) {
    throw refuse("prepared indices / inverse permutation do not match the tensor", indexCount, [fields.mainIndices?.length, fields.resIndices?.length, fields.invPerm?.length]);
  }
  const total = t.outFeatures * t.inFeatures;
  if (options.reference !== undefined && !(options.reference instanceof Float32Array && options.reference.length === total)) throw refuse("reference length", total, options.reference.length);
}
