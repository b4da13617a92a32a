/**
 * Llama-family tensor names, GGUF ↔ Hugging Face (gguf-py constants.py TENSOR_NAMES and
 * tensor_mapping.py; ../shared/ref/gguf-onnx.md §1.5), and the Q/K row permutation that
 * convert_hf_to_gguf.py applies (`LlamaModel.permute`).
 *
 * The permutation exists because HF's Llama rotates the two halves of each head (rotate_half)
 * while ggml's rope rotates adjacent pairs (Meta's original layout): converting HF → GGUF
 * interleaves each head's two row halves, and reading GGUF back as HF undoes it.
 */

/** Whole-model tensors: GGUF stem ↔ HF stem (each takes a `.weight` / `.bias` suffix). */
const GLOBAL: readonly (readonly [string, string])[] = [
  ["token_embd", "model.embed_tokens"],
  ["output_norm", "model.norm"],
  ["output", "lm_head"],
];

/** Per-block tensors: `blk.N.<gguf>` ↔ `model.layers.N.<hf>`. */
const BLOCK: readonly (readonly [string, string])[] = [
  ["attn_norm", "input_layernorm"],
  ["attn_q", "self_attn.q_proj"],
  ["attn_k", "self_attn.k_proj"],
  ["attn_v", "self_attn.v_proj"],
  ["attn_output", "self_attn.o_proj"],
  ["ffn_norm", "post_attention_layernorm"],
  ["ffn_gate", "mlp.gate_proj"],
  ["ffn_up", "mlp.up_proj"],
  ["ffn_down", "mlp.down_proj"],
];

const GGUF_GLOBAL = new Map(GLOBAL);
const HF_GLOBAL = new Map(GLOBAL.map(([g, h]) => [h, g]));
const GGUF_BLOCK = new Map(BLOCK);
const HF_BLOCK = new Map(BLOCK.map(([g, h]) => [h, g]));

const GGUF_NAME = /^(?:blk\.(\d+)\.)?([a-z_]+)\.(weight|bias)$/;
const HF_BLOCK_NAME = /^model\.layers\.(\d+)\.([a-z_.]+)\.(weight|bias)$/;
const HF_GLOBAL_NAME = /^([a-z_.]+)\.(weight|bias)$/;

/**
 * The HF name of a llama-family GGUF tensor, or undefined when it has none (e.g. rope_freqs,
 * which convert_hf_to_gguf generates from rope_scaling and HF never stores).
 */
export function ggufToHfName(name: string): string | undefined {
  const m = GGUF_NAME.exec(name);
  if (m === null) return undefined;
  const [, block, stem, suffix] = m;
  if (block === undefined) {
    const hf = GGUF_GLOBAL.get(stem!);
    return hf === undefined ? undefined : `${hf}.${suffix}`;
  }
  const hf = GGUF_BLOCK.get(stem!);
  return hf === undefined ? undefined : `model.layers.${Number(block)}.${hf}.${suffix}`;
}

/** The GGUF name of a llama-family HF tensor, or undefined when it has none. */
export function hfToGgufName(name: string): string | undefined {
  const b = HF_BLOCK_NAME.exec(name);
  if (b !== null) {
    const gguf = HF_BLOCK.get(b[2]!);
    return gguf === undefined ? undefined : `blk.${Number(b[1])}.${gguf}.${b[3]}`;
  }
  const g = HF_GLOBAL_NAME.exec(name);
  if (g === null) return undefined;
  const gguf = HF_GLOBAL.get(g[1]!);
  return gguf === undefined ? undefined : `${gguf}.${g[2]}`;
}

/** Which head count permutes a GGUF tensor's rows: Q uses head_count, K head_count_kv; others none. */
export function qkPermutation(ggufName: string): "q" | "k" | undefined {
  if (/^blk\.\d+\.attn_q\.(weight|bias)$/.test(ggufName)) return "q";
  if (/^blk\.\d+\.attn_k\.(weight|bias)$/.test(ggufName)) return "k";
  return undefined;
}

type RowArray = Float32Array | Float64Array | Uint16Array | Int8Array | Uint8Array;

/**
 * Where HF row `row` lands in GGUF order: numpy's
 * `W.reshape(n_head, 2, rows/n_head/2, K).swapaxes(1, 2).reshape(rows, K)` as an index map.
 * HF row h·hd + t·(hd/2) + j (half t of head h) goes to GGUF row h·hd + 2j + t.
 */
export function permutedRow(row: number, rows: number, nHead: number): number {
  const hd = rows / nHead;
  const half = hd / 2;
  const h = Math.floor(row / hd);
  const r = row - h * hd;
  const t = r < half ? 0 : 1;
  const j = r - t * half;
  return h * hd + 2 * j + t;
}

/** Checks the geometry permute() needs: rows split into nHead heads of an even row count. */
export function canPermuteQk(rows: number, nHead: number): boolean {
  return Number.isSafeInteger(nHead) && nHead > 0 && rows % (2 * nHead) === 0;
}

function moveRows<T extends RowArray>(src: T, rows: number, nHead: number, toGguf: boolean): T {
  if (!canPermuteQk(rows, nHead) || src.length % Math.max(rows, 1) !== 0) {
    throw new RangeError(`Q/K permutation: ${rows} rows (of ${src.length} elements) do not split into ${nHead} heads of an even size`);
  }
  const cols = rows === 0 ? 0 : src.length / rows;
  const out = new (src.constructor as new (n: number) => T)(src.length);
  for (let row = 0; row < rows; row++) {
    const p = permutedRow(row, rows, nHead);
    const [from, to] = toGguf ? [row, p] : [p, row];
    out.set(src.subarray(from * cols, (from + 1) * cols), to * cols);
  }
  return out;
}

/** HF → GGUF row order (row-major `[rows, cols]`; pass any element type, or bytes with cols in bytes). */
export function permuteQk<T extends RowArray>(src: T, rows: number, nHead: number): T {
  return moveRows(src, rows, nHead, true);
}

/** GGUF → HF row order: the inverse of permuteQk. */
export function unpermuteQk<T extends RowArray>(src: T, rows: number, nHead: number): T {
  return moveRows(src, rows, nHead, false);
}
