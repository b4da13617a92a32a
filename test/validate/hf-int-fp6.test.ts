import { join } from "node:path";
import { firstModule, Q, runHfCases, type HfCase } from "./hf-cases.js";
import { patchBytes, patchJson, readBytes, relativeBegin, rewriteHeader, tensorAt, u16le } from "./plant.js";

/**
 * The corrupted suite, part 2a: the shared GPTQ 4-bit and FP6 checkpoints, each copy with one
 * planted defect: array dtypes and shapes, g_idx values, configs that declare other bit widths,
 * missing arrays, a stale SHA256SUMS, and (deep) non-finite or degenerate scales, a folder name
 * that claims another width, a layer far from the base model.
 */
const cases: HfCase[] = [
  // ---- GPTQ 4-bit (auto-round export, v1 zeros, g_idx stored)
  {
    name: "gptq: g_idx entry outside the groups",
    from: "gptq-4bit",
    plant: async (_d, w) => {
      const g = await tensorAt(w, `${Q}.g_idx`);
      await patchBytes(w, g.byteOffset + 4 * 37, [99, 0, 0, 0]);
      return { code: "PACKED_VALUE_INVALID", file: w, tensor: `${Q}.g_idx`, byteOffset: g.byteOffset + 4 * 37, count: 1 };
    },
  },
  {
    name: "gptq: scales of the wrong shape",
    from: "gptq-4bit",
    plant: async (_d, w) => {
      const { dataStart } = await rewriteHeader(w, (h) => void (h[`${Q}.scales`].shape = [2, 256]));
      const begin = await relativeBegin(w, `${Q}.scales`);
      return { code: "PACKED_SHAPE_MISMATCH", file: w, tensor: `${Q}.scales`, byteOffset: dataStart + begin, count: 1 };
    },
  },
  {
    name: "gptq: qzeros of the wrong dtype",
    from: "gptq-4bit",
    plant: async (_d, w) => {
      const { dataStart } = await rewriteHeader(w, (h) => void (h[`${Q}.qzeros`].dtype = "F32"));
      return { code: "PACKED_DTYPE_MISMATCH", file: w, tensor: `${Q}.qzeros`, byteOffset: dataStart + (await relativeBegin(w, `${Q}.qzeros`)), count: 1 };
    },
  },
  {
    name: "gptq: the config declares 8 bits over 4-bit codes",
    from: "gptq-4bit",
    plant: async (d, w) => {
      await patchJson(join(d, "config.json"), (c) => void (c["quantization_config"].bits = 8));
      const m = await firstModule(w, ".qweight");
      return { code: "BITS_MISMATCH", file: w, tensor: `${m}.qweight`, byteOffset: (await tensorAt(w, `${m}.qweight`)).byteOffset, count: 14 };
    },
  },
  {
    name: "gptq: a packed linear without its qzeros",
    from: "gptq-4bit",
    plant: async (_d, w) => {
      await rewriteHeader(w, (h) => {
        h[`${Q}.qzeros_renamed`] = h[`${Q}.qzeros`];
        delete h[`${Q}.qzeros`];
      });
      return { code: "TENSOR_MISSING", file: w, tensor: `${Q}.qzeros`, count: 1 };
    },
  },
  {
    name: "gptq: a checkpoint_format lmpack does not know",
    from: "gptq-4bit",
    plant: async (d) => {
      await patchJson(join(d, "config.json"), (c) => void (c["quantization_config"].checkpoint_format = "gptq_v9"));
      return { code: "QUANT_CONFIG_INVALID", file: join(d, "config.json"), count: 1 };
    },
  },
  {
    name: "gptq deep: a NaN scale",
    from: "gptq-4bit",
    deep: true,
    plant: async (_d, w) => {
      const s = await tensorAt(w, `${Q}.scales`);
      await patchBytes(w, s.byteOffset + 2 * 130, u16le(0x7e00));
      return { code: "NONFINITE_VALUE", file: w, tensor: `${Q}.scales`, byteOffset: s.byteOffset + 2 * 130, count: 1 };
    },
  },
  {
    name: "gptq deep: a zero scale",
    from: "gptq-4bit",
    deep: true,
    plant: async (_d, w) => {
      const s = await tensorAt(w, `${Q}.scales`);
      await patchBytes(w, s.byteOffset + 2 * 5, u16le(0));
      return { code: "DEGENERATE_SCALE", file: w, tensor: `${Q}.scales`, byteOffset: s.byteOffset + 2 * 5, count: 1 };
    },
  },
  {
    name: "gptq deep: the folder name claims 8-bit",
    from: "gptq-4bit",
    as: "tinystories-656K-gptq-8bit",
    deep: true,
    plant: async (d) => ({ code: "NAME_CLAIM_MISMATCH", file: d, count: 1 }),
  },
  {
    name: "gptq --base: one layer's scales ×8, far from the base model",
    from: "gptq-4bit",
    base: true,
    plant: async (_d, w) => {
      const s = await tensorAt(w, `${Q}.scales`);
      const bits = new Uint16Array((await readBytes(w, s.byteOffset, s.byteLength)).buffer);
      // Exponent + 3 is ×8 exactly for every normal fp16 below 2^12.
      await patchBytes(w, s.byteOffset, new Uint8Array(bits.map((h) => ((h & 0x7c00) === 0 ? h : h + (3 << 10))).buffer));
      return { code: "BASE_MISMATCH", file: w, tensor: `${Q}.weight`, count: 1 };
    },
  },
  {
    name: "gptq: a weight changed after SHA256SUMS was written",
    from: "gptq-4bit",
    sums: true,
    plant: async (_d, w) => {
      const norm = await tensorAt(w, "model.norm.weight");
      const [b] = await readBytes(w, norm.byteOffset + 1, 1);
      await patchBytes(w, norm.byteOffset + 1, [b! ^ 0x01]);
      return { code: "CHECKSUM_MISMATCH", file: w, count: 1 };
    },
  },
  // ---- FP6 e3m2 (fp6_tc)
  {
    name: "fp6: weight_scale of the wrong dtype",
    from: "fp6",
    plant: async (_d, w) => {
      const { dataStart } = await rewriteHeader(w, (h) => void (h[`${Q}.weight_scale`].dtype = "BF16"));
      return { code: "PACKED_DTYPE_MISMATCH", file: w, tensor: `${Q}.weight_scale`, byteOffset: dataStart + (await relativeBegin(w, `${Q}.weight_scale`)), count: 1 };
    },
  },
  {
    name: "fp6: a linear without its weight_scale",
    from: "fp6",
    plant: async (_d, w) => {
      await rewriteHeader(w, (h) => {
        h[`${Q}.weight_scale_gone`] = h[`${Q}.weight_scale`];
        delete h[`${Q}.weight_scale`];
      });
      return { code: "TENSOR_MISSING", file: w, tensor: `${Q}.weight_scale`, count: 1 };
    },
  },
  {
    name: "fp6: the config declares e2m2 (5 bits) over 6-bit codes",
    from: "fp6",
    plant: async (d, w) => {
      await patchJson(join(d, "config.json"), (c) => Object.assign(c["quantization_config"], { ebits: 2, mbits: 2, layout: "fp6_llm_4+1" }));
      const m = await firstModule(w, ".weight_packed");
      return { code: "BITS_MISMATCH", file: w, tensor: `${m}.weight_packed`, byteOffset: (await tensorAt(w, `${m}.weight_packed`)).byteOffset, count: 14 };
    },
  },
  {
    name: "fp6 deep: an infinite scale",
    from: "fp6",
    deep: true,
    plant: async (_d, w) => {
      const s = await tensorAt(w, `${Q}.weight_scale`);
      await patchBytes(w, s.byteOffset + 2 * 9, u16le(0x7c00));
      return { code: "NONFINITE_VALUE", file: w, tensor: `${Q}.weight_scale`, byteOffset: s.byteOffset + 2 * 9, count: 1 };
    },
  },
  {
    name: "fp6 deep: a negative scale",
    from: "fp6",
    deep: true,
    plant: async (_d, w) => {
      const s = await tensorAt(w, `${Q}.weight_scale`);
      const [lo, hi] = await readBytes(w, s.byteOffset + 2 * 3, 2);
      await patchBytes(w, s.byteOffset + 2 * 3, [lo!, hi! | 0x80]);
      return { code: "DEGENERATE_SCALE", file: w, tensor: `${Q}.weight_scale`, byteOffset: s.byteOffset + 2 * 3, count: 1 };
    },
  },
];

runHfCases("validate: GPTQ and FP6 checkpoints", cases);
