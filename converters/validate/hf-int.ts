import { isLmpackError } from "../../formats/errors.js";
import { INT_BITS, type IntBits, type IntGroupTensor } from "../../formats/int-group/types.js";
import type { TensorEntry } from "../checkpoint.js";
import { groupIntLayers } from "../int-group/import-hf.js";
import type { HfIntQuantConfig } from "../int-group/hf-quant-config.js";
import { llamaTensorTable } from "./config-tensors.js";
import { groupModules, modulesWith, reportOrphans, scanArray, type QuantContext, type QuantResult } from "./hf-quant.js";
import type { ScanArray } from "./types.js";

/**
 * HF GPTQ / AutoRound / AWQ layers: per module, the importer's grouping (dtypes and shapes of
 * qweight, qzeros, scales, g_idx against each other and the layer spec) and its unpacker (g_idx
 * in range, zero points in range). A qweight whose shape fits another bit width than the config
 * declares is reported as BITS_MISMATCH with both widths, rather than as a bare shape mismatch.
 */
export async function checkIntLayers(tensors: TensorEntry[], qc: HfIntQuantConfig, ctx: QuantContext): Promise<QuantResult> {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const orphans = reportOrphans(tensors, ".qweight", [".qzeros", ".scales", ".g_idx"], "packed linear", ctx);
  const arrays: ScanArray[] = [];
  const expected = ctx.config === undefined ? undefined : llamaTensorTable(ctx.config);
  const { entries, failed } = await groupModules<IntGroupTensor>(tensors, modulesWith(tensors, ".qweight"), {
    group: (subset) => groupIntLayers(subset, qc),
    explain: (module, error) => {
      if (!isLmpackError(error) || error.code !== "PACKED_SHAPE_MISMATCH") return false;
      const spec = qc.layer(module);
      const qweight = byName.get(`${module}.qweight`);
      const shape = expected?.get(`${module}.weight`)?.shape;
      if (spec === "skip" || qweight === undefined || shape === undefined || qweight.shape.length !== 2) return false;
      // GPTQ packs along K (qweight [K·bits/32, N]); AWQ along N (qweight [K, N·bits/32]).
      const [out, inFeatures] = shape as [number, number];
      const stored = qc.tensorLayout === "gptq" ? (qweight.shape[0]! * 32) / inFeatures : (qweight.shape[1]! * 32) / out;
      if (!INT_BITS.includes(stored as IntBits) || stored === spec.bits) return false;
      ctx.findings.add("BITS_MISMATCH", `qweight holds ${stored}-bit codes for a [${out}, ${inFeatures}] layer, but the quantization config declares ${spec.bits} bits`, { file: qweight.file, tensor: qweight.name, byteOffset: qweight.byteOffset, expected: `${spec.bits} bits (${ctx.configFile})`, actual: `${stored} bits` });
      return true;
    },
    loaded: (module, _entry, tensor) => {
      const spec = qc.layer(module);
      if (spec !== "skip" && spec.sym && !tensor.params.sym) {
        ctx.findings.add("QUANT_CONFIG_MISMATCH", "the config says sym, but the stored zero points are not all 2^(bits−1) (decoders use the zeros)", { file: ctx.configFile, tensor: `${module}.qzeros`, expected: "symmetric zero points", actual: "other zero points" }, "warning");
      }
      arrays.push(scanArray(byName.get(`${module}.scales`)!, "scale", ctx));
    },
  }, ctx);
  for (const m of orphans) failed.add(m);
  return { entries, arrays, failedModules: failed, declared: { method: qc.method, bits: qc.global.bits } };
}
