// The columns kernel's walk for P = 4 (float32 out, verify), pipelined by 4-column piece
// (included by columns.cuh, after the item, outlier and stash helpers it uses).
#pragma once

// Piece p of the item at vector row r, its gathers in v (lq_vptq_gather_columns of columns 4p …
// 4p + 3): residuals, zeros and norm (lq_vptq_finish_columns), then per row the float32 store and
// the verify terms of stash unit 2t + p. With `refill` (the item's last piece), each row's two
// units then take the next item's row (vector row next).
template <typename T, int VL>
__device__ __forceinline__ void lq_vptq_finish_piece(const lq_vptq_columns_args<T>& a, const lq_vptq_columns<4>& s, const lq_vptq_index_words& w, int p,
                                                     typename lq_vptq_pair_of<T>::type (&v)[4][VL / 2], uint32_t ok, int64_t r, int64_t next, bool refill,
                                                     uint4* stash, lq_verify_chains& item) {
  lq_vptq_finish_columns<T, VL, 4, 4>(a, s, w, 4 * p, v, ok);
  const bool verify = a.reference != nullptr;
  const int rows = lq_vptq_item_rows<VL>(a, r);
  const int next_rows = next < 0 ? 0 : lq_vptq_item_rows<VL>(a, next);
  const bool any_outlier = s.outliers != 0;
#pragma unroll
  for (int t = 0; t < VL; t++) {
    if (t < rows && s.live[p]) {
      float f[4];
#pragma unroll
      for (int e = 0; e < 4; e++) f[e] = t % 2 == 0 ? __low2float(v[e][t / 2]) : __high2float(v[e][t / 2]);
      if (a.out != nullptr) lq_vptq_store16(static_cast<float*>(a.out) + (r * VL + t) * a.in + s.at[p], __float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
      if (verify) {
        const uint4 u = stash[32 * (2 * t + p)];
        const float ref[4] = {__uint_as_float(u.x), __uint_as_float(u.y), __uint_as_float(u.z), __uint_as_float(u.w)};
#pragma unroll
        for (int e = 0; e < 4; e++) {
          if (!any_outlier || (s.outliers >> (4 * p + e) & 1u) == 0) item.add(t % 2, f[e], ref[e]);
        }
      }
    }
    if (verify && refill && next_rows > 0) lq_vptq_stash_row<VL, 4>(a, s, stash, next, next_rows, t);
  }
}

// The walk of lq_vptq_columns_walk for P = 4 (float32 out, verify), pipelined by piece: while a
// piece is summed, the other piece's gathers are in flight (the item's second piece during its
// first, the next item's first during its second), in the registers one item's 8 gathers took.
// Where every gather of an item was waited for before its sums, the next item's could not start
// until they were done. Measured on the H100 (issue 9, % of the copy, three runs, both shapes):
// float32 out + verify 85.0–85.6 against 84.1–84.7; verify alone 67.7–70.1 against 70.0–70.4;
// float32 out alone unchanged (81.7–82.2). The suite's bound for reordered float64 sums covers
// the new order of the sums (piece by piece).
template <typename T, int VL>
__device__ __forceinline__ void lq_vptq_columns_walk_pieces(const lq_vptq_columns_args<T>& a, int64_t num_idx, int64_t slab, int64_t r, int64_t step, uint4* stash,
                                                            double& max_abs, double& sq_err, double& sq_ref, bool& bad) {
  using T2 = typename lq_vptq_pair_of<T>::type;
  if (r >= num_idx) return;
  lq_vptq_columns<4> s;
  lq_vptq_columns_setup(a, slab, s, bad);
  lq_vptq_index_words now, next;
  lq_vptq_load_indices(a, s, r, now);
  const bool verify = a.reference != nullptr;
  if (verify) {
    const int rows = lq_vptq_item_rows<VL>(a, r);
#pragma unroll
    for (int t = 0; t < VL; t++) lq_vptq_stash_row<VL, 4>(a, s, stash, r, rows, t);
    lq_cp_async_commit();
  }
  T2 first[4][VL / 2];
  uint32_t ok_first = lq_vptq_gather_columns<T, VL, 4, 4>(a, s, now, 0, first, bad);
#pragma unroll 1
  for (;;) {
    const bool more = r + step < num_idx;
    if (more) lq_vptq_load_indices(a, s, more ? r + step : r, next);
    lq_vptq_opaque(s);
    T2 second[4][VL / 2];
    const uint32_t ok_second = lq_vptq_gather_columns<T, VL, 4, 4>(a, s, now, 4, second, bad);
    if (verify) lq_cp_async_wait<0>();
    lq_verify_chains item;
    lq_vptq_finish_piece<T, VL>(a, s, now, 0, first, ok_first, r, -1, false, stash, item);
    if (more) ok_first = lq_vptq_gather_columns<T, VL, 4, 4>(a, s, next, 0, first, bad);
    lq_vptq_finish_piece<T, VL>(a, s, now, 1, second, ok_second, r, more ? r + step : -1, true, stash, item);
    if (verify) {
      lq_cp_async_commit();
      item.add_to(max_abs, sq_err, sq_ref);
    }
    if (s.outliers != 0) lq_vptq_item_outliers<T, VL, 4>(a, s, r, max_abs, sq_err, sq_ref, bad);
    if (!more) break;
    r += step;
    now = next;
  }
}
