import type { IntGroupParams } from "../../formats/int-group/types.js";
import type { ZeroConvention } from "../../formats/int-group/gptq-layout.js";
import type { HfIntMethod } from "./hf-quant-config.js";

/** One packed linear as written: its module name (no ".weight"), parameters and shape. */
export interface WrittenLayer {
  module: string;
  params: IntGroupParams;
  inFeatures: number;
  actOrder: boolean;
}

interface Spec {
  bits: number;
  group_size: number;
  sym: boolean;
}

const specOf = (l: WrittenLayer): Spec => ({ bits: l.params.bits, group_size: l.params.groupSize >= l.inFeatures ? -1 : l.params.groupSize, sym: l.params.sym });
const keyOf = (s: Spec) => `${s.bits}/${s.group_size}/${s.sym}`;

/**
 * `quantization_config` for what was written: the most common (bits, group_size, sym) is the
 * global setting; other layers get per-module overrides in each method's own syntax (GPTQModel
 * `dynamic`, auto-round `extra_config`), and unquantized linears are excluded the same way
 * (AWQ: `modules_to_not_convert`). The zero convention decides GPTQ's checkpoint_format and
 * auto-round's packing_format.
 */
export function buildQuantConfig(method: HfIntMethod, zeros: ZeroConvention, layers: WrittenLayer[], skipped: string[]): Record<string, unknown> {
  const counts = new Map<string, { spec: Spec; count: number }>();
  for (const layer of layers) {
    const spec = specOf(layer);
    const entry = counts.get(keyOf(spec)) ?? { spec, count: 0 };
    entry.count++;
    counts.set(keyOf(spec), entry);
  }
  const global = [...counts.values()].sort((a, b) => b.count - a.count)[0]?.spec ?? { bits: 4, group_size: 128, sym: true };
  const differing = layers.filter((l) => keyOf(specOf(l)) !== keyOf(global));
  const escape = (name: string) => name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  if (method === "awq") {
    return { quant_method: "awq", version: "gemm", bits: 4, group_size: global.group_size, zero_point: layers.some((l) => !l.params.sym), modules_to_not_convert: skipped.length === 0 ? null : skipped, provider: "lmpack" };
  }
  if (method === "gptq") {
    const dynamic: Record<string, unknown> = {};
    for (const l of differing) dynamic[`+:^${escape(l.module)}$`] = specOf(l);
    for (const name of skipped) dynamic[`-:^${escape(name)}$`] = {};
    return {
      quant_method: "gptq",
      checkpoint_format: zeros === "v1" ? "gptq" : "gptq_v2",
      bits: global.bits,
      group_size: global.group_size,
      sym: global.sym,
      desc_act: layers.some((l) => l.actOrder),
      static_groups: false,
      true_sequential: true,
      damp_percent: 0.01,
      lm_head: false,
      ...(Object.keys(dynamic).length === 0 ? {} : { dynamic }),
      provider: "lmpack",
    };
  }
  const extra: Record<string, unknown> = {};
  for (const l of differing) extra[l.module] = specOf(l);
  for (const name of skipped) extra[name] = { bits: 16 };
  return {
    quant_method: "auto-round",
    packing_format: zeros === "v1" ? "auto_round:auto_gptq" : "auto_round",
    bits: global.bits,
    group_size: global.group_size,
    sym: global.sym,
    data_type: "int",
    ...(Object.keys(extra).length === 0 ? {} : { extra_config: extra }),
    provider: "lmpack",
  };
}
