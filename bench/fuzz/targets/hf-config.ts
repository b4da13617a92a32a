import { normaliseConfig, parseConfigJson } from "../../../converters/hf/config.js";
import { parseHfFpxConfig } from "../../../converters/fpx/hf-config.js";
import { parseHfQuantConfig } from "../../../converters/int-group/hf-quant-config.js";
import { parseHfSpqrConfig } from "../../../converters/spqr/hf-config.js";
import { parseHfVptqConfig } from "../../../converters/vptq/hf-config.js";
import { ignoringTypedErrors, typedErrorsOnlySync } from "../harness.js";
import { loadBaseDocuments, mutatedDocument, type Json } from "../json-mutation.js";

/**
 * Hugging Face configs: config.json normalised (v4/v5 spellings, rope, heads), and its
 * `quantization_config` through every parser lmpack has (GPTQ with `dynamic` regexes, AutoRound
 * with `extra_config`, AWQ, FP6, SpQR, VPTQ per-layer configs), each asked about a few module
 * names and about the names the config itself mentions. A document without `quantization_config`
 * is read as an AutoGPTQ quantize_config.json, the way import-local.ts reads one. The input is an
 * edit script over the committed configs (json-mutation.ts).
 */
const FILE = "config.json";
const MODULES = ["model.layers.0.self_attn.q_proj", "model.layers.11.mlp.down_proj", "lm_head"];
const BASES = loadBaseDocuments("hf-config", (bytes) => JSON.parse(new TextDecoder().decode(bytes)) as Json);

export function fuzz(data: Buffer): void {
  const text = JSON.stringify(mutatedDocument(BASES, data));
  typedErrorsOnlySync(data, () => {
    const raw = parseConfigJson(text, FILE);
    ignoringTypedErrors(() => void normaliseConfig(raw, FILE));
    const quant = raw["quantization_config"] ?? { quant_method: "gptq", ...raw };
    const names = [...MODULES, ...namesIn(quant)];
    ignoringTypedErrors(() => {
      const config = parseHfQuantConfig(quant, FILE);
      for (const name of names) config?.layer(name);
    });
    ignoringTypedErrors(() => void parseHfFpxConfig(quant, FILE));
    ignoringTypedErrors(() => void parseHfSpqrConfig(quant, FILE));
    ignoringTypedErrors(() => {
      const config = parseHfVptqConfig(quant, FILE);
      for (const name of names) ignoringTypedErrors(() => void config?.layer(name));
    });
  });
}

/** Keys of the per-layer sections: the module names the config expects to be asked about. */
function namesIn(quant: unknown): string[] {
  if (typeof quant !== "object" || quant === null) return [];
  const q = quant as Record<string, unknown>;
  return ["dynamic", "extra_config", "config_for_layers", "shared_layer_config"].flatMap((key) => {
    const section = q[key];
    return typeof section === "object" && section !== null ? Object.keys(section).slice(0, 8) : [];
  });
}
