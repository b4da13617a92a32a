import { totalmem } from "node:os";
import { UsageError } from "../../formats/errors.js";
import { dequantize } from "../../formats/int-group/reference.js";
import { cpuBlockGradBackend, type BlockGradBackendFactory } from "../../formats/int-group/quantizers/block-grad-backend.js";
import { tuneBlockSignRound, type BlockSignRoundOptions, type BlockSignRoundResult } from "../../formats/int-group/quantizers/signround-block.js";
import type { SignRoundResult } from "../../formats/int-group/quantizers/signround.js";
import type { IntGroupParams } from "../../formats/int-group/types.js";
import { BLOCK_LINEARS, blockWeights, type BlockContext, type BlockLinearWeights } from "../../model/block-grad/forward.js";
import { LlamaForward } from "../../model/llama-forward.js";
import type { LlamaWeights } from "../../model/llama-weights.js";
import { inverseFrequencies, ropeTable } from "../../model/rope.js";
import { SEQUENTIAL_STATE_MAX_BYTES } from "../hessians/sequential.js";

/**
 * Block-wise SignRound over a whole Llama-family decoder (auto-round's `quantize_blocks` with
 * nblocks = 1): blocks in order, each tuned by tuneBlockSignRound on
 *   inputs  = the calibration windows' hidden states after the already-quantized blocks (q_input),
 *   targets = the full-precision block's outputs on the full-precision hidden states (fp_outputs),
 * auto-round's defaults (enable_quanted_input=True). Both streams are kept; after a block is
 * tuned, the q stream advances through it with its dequantized weights (the reference dequant
 * at float32, auto-round's W_qdq, which the packed model computes with) and the fp stream
 * becomes the targets. The caller's weights are not modified.
 *
 * Every call to `onBlock` hands over the block's seven results, already in the layer-wise
 * quantizer's result type, so the existing packing/export code can take them unchanged.
 *
 * Every block forward — the targets, the tuning, the q stream's advance — runs through one
 * BlockGradBackend per block (`backendFactory`: the CPU reference by default, or
 * kernels/block-grad/backend.ts's GPU one), made before the block and released after it, so a
 * GPU holds one block's weights, gradients and tape at a time.
 */

export interface BlockwiseSignRoundOptions extends Omit<BlockSignRoundOptions, "backend"> {
  params: IntGroupParams;
  /** Cap on the two kept hidden-state streams in bytes (default as sequential calibration's). */
  maxStateBytes?: number;
  /** config.json's location, for messages. */
  file?: string;
  /** Makes each block's backend (default: CPU, model/block-grad). */
  backendFactory?: BlockGradBackendFactory;
}

export type BlockDoneCallback = (layer: number, result: BlockSignRoundResult, seconds: number) => void;

/** Results by linear name (e.g. "model.layers.0.self_attn.q_proj"), in model order. */
export function quantizeModelSignRoundBlockwise(weights: LlamaWeights, windows: readonly Int32Array[], options: BlockwiseSignRoundOptions, onBlock?: BlockDoneCallback): Map<string, SignRoundResult> {
  if (windows.length === 0) throw new UsageError("BAD_ARGUMENT", "block-wise SignRound needs at least one calibration window");
  const { config } = weights;
  const stateBytes = 2 * windows.reduce((sum, w) => sum + w.length, 0) * config.hiddenSize * 8;
  const cap = options.maxStateBytes ?? Math.min(SEQUENTIAL_STATE_MAX_BYTES, 0.25 * totalmem());
  if (stateBytes > cap) {
    throw new UsageError("BAD_ARGUMENT", `block-wise SignRound keeps two float64 hidden-state streams: ${(stateBytes / 2 ** 30).toFixed(2)} GiB for ${windows.length} windows, more than the ${(cap / 2 ** 30).toFixed(2)} GiB cap`, { expected: `≤ ${cap} bytes`, actual: stateBytes });
  }
  const maxTokens = Math.max(...windows.map((w) => w.length));
  const forward = new LlamaForward(weights, maxTokens, options.file);
  const rope = ropeTable(inverseFrequencies(config, options.file ?? "config.json"), config.headDim, maxTokens);
  const tokens = windows.map((w) => w.length);
  let fpStates: Float64Array[] = windows.map((ids) => forward.embed(ids));
  let qStates: Float64Array[] = fpStates.map((s) => s.slice());
  const makeBackend = options.backendFactory ?? cpuBlockGradBackend;
  const results = new Map<string, SignRoundResult>();
  weights.layers.forEach((layer, index) => {
    const started = performance.now();
    const ctx: BlockContext = { config, layer, rope };
    const backend = makeBackend(ctx, maxTokens);
    let result: BlockSignRoundResult;
    try {
      backend.setWeights(blockWeights(layer));
      const targets = fpStates.map((state, w) => backend.forward(state, tokens[w]!));
      result = tuneBlockSignRound(ctx, options.params, { inputs: qStates, targets, tokens }, { ...options, backend });
      const quantized = Object.fromEntries(BLOCK_LINEARS.map((key) => [key, Float64Array.from(dequantize(result.linears[key].tensor, { precision: "f32" }))])) as BlockLinearWeights;
      backend.setWeights(quantized);
      qStates = qStates.map((state, w) => backend.forward(state, tokens[w]!));
      fpStates = targets;
    } finally {
      backend.release();
    }
    for (const key of BLOCK_LINEARS) results.set(layer[key].name, result.linears[key]);
    onBlock?.(index, result, (performance.now() - started) / 1000);
  });
  return results;
}
