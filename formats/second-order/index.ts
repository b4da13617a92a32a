/**
 * The second-order (GPTQ-family) engine shared by GPTQ, SpQR and VPTQ: Cholesky algebra,
 * Hessian/weight preparation, the block-wise column loop, and the dense product under it.
 */
export { choleskyLower, invertLowerTriangular, invertSpd, upperCholeskyOfInverse } from "./cholesky.js";
export type { CholeskyOptions } from "./cholesky.js";
export { runGptqLoop } from "./gptq-loop.js";
export type { ColumnQuantizer, DeferredUpdates, LoopOptions, LoopResult, LoopView } from "./gptq-loop.js";
export type { Hessian, HessianSource } from "./hessian.js";
export { gemmAdd, matmulAdd } from "./matmul.js";
export type { MatrixView } from "./matmul.js";
export { actOrderPermutation, dampHessian, fixDeadColumns, fromColumnMajor, invertPermutation, permuteHessian, prepareSecondOrder, scatterFromColumnMajor, toColumnMajor } from "./prepare.js";
export type { PreparedLayer, PrepareOptions } from "./prepare.js";
