import type { SpqrTensor } from "../../formats/spqr/types.js";

/**
 * The statistics of a tensor in the layout of kernels/spqr/pipeline.cuh, for a batch of R rows:
 * each batch's scale codes (and zero codes) one run of G·R bytes, row-minor, padded to 16 bytes;
 * each tile row's second-order statistics one run of G ushort4 (s_s, z_s, s_z, z_z), G padded to
 * even. The same bytes as spqr.cuh's [G][m] and [G][T] arrays, reordered (plus the padding), so
 * that the kernel copies whole 16-byte chunks where it would fetch a 32-byte sector per 4 bytes.
 */
export interface PipelineStatistics {
  scaleCodes: Uint8Array;
  zeroCodes: Uint8Array;
  /** ushort4 per (tile row, group) as four uint16. */
  stats: Uint16Array;
}

/** pipeline.cuh lq_spqr_pipe_code_stride: a batch's codes of one kind, G·R bytes rounded up to 16. */
export const pipelineCodeStride = (rows: number, groups: number): number => Math.ceil((groups * rows) / 16) * 16;
/** pipeline.cuh lq_spqr_pipe_stat_bytes: one tile row's statistics, G rounded up to even, 8 bytes each. */
export const pipelineStatBytes = (groups: number): number => Math.ceil(groups / 2) * 2 * 8;

export function pipelineStatistics(t: SpqrTensor, rows: number, groups: number): PipelineStatistics {
  const m = t.outFeatures;
  const batches = m / rows;
  const codeStride = pipelineCodeStride(rows, groups);
  const reorder = (codes: Uint8Array) => {
    const out = new Uint8Array(batches * codeStride);
    for (let g = 0; g < groups; g++) {
      for (let r = 0; r < m; r++) out[Math.floor(r / rows) * codeStride + g * rows + (r % rows)] = codes[g * m + r]!;
    }
    return out;
  };
  // spqr.cuh's [G][T] ushort4s (interleaveStats), moved to [T][statGroups].
  const interleaved = interleaveStats(t);
  const tileRows = m / t.params.beta1;
  const statGroups = pipelineStatBytes(groups) / 8;
  const stats = new Uint16Array(4 * tileRows * statGroups);
  for (let g = 0; g < groups; g++) {
    for (let tile = 0; tile < tileRows; tile++) {
      const [from, to] = [4 * (g * tileRows + tile), 4 * (tile * statGroups + g)];
      for (let q = 0; q < 4; q++) stats[to + q] = interleaved[from + q]!;
    }
  }
  return { scaleCodes: reorder(t.scaleCodes), zeroCodes: reorder(t.zeroCodes), stats };
}

/** (s_s, z_s, s_z, z_z) per tile, the order of the HF second-order word, as the kernels' ushort4 ([G][T]: spqr.cuh). */
export function interleaveStats(t: SpqrTensor): Uint16Array {
  const tiles = t.scaleScale.length;
  const stats = new Uint16Array(4 * tiles);
  for (let k = 0; k < tiles; k++) {
    stats[4 * k] = t.scaleScale[k]!;
    stats[4 * k + 1] = t.zeroScale[k]!;
    stats[4 * k + 2] = t.scaleZero[k]!;
    stats[4 * k + 3] = t.zeroZero[k]!;
  }
  return stats;
}
