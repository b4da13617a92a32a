import { join } from "node:path";
import { Q, runHfCases, type HfCase } from "./hf-cases.js";
import { patchBytes, patchJson, readBytes, relativeBegin, rewriteHeader, tensorAt, u16le } from "./plant.js";

/**
 * The corrupted suite, part 2b: the shared SpQR and VPTQ checkpoints, each copy with one planted
 * defect: permutations that are not, CSR offsets that decrease, outlier columns out of range,
 * second-order bytes that disagree, configs and tensors that do not match both ways, and (deep)
 * non-finite outliers and centroids, a folder name that claims other VPTQ parameters.
 */
const cases: HfCase[] = [
  // ---- SpQR (CSR outliers)
  {
    name: "spqr: in_perm is not a permutation",
    from: "spqr",
    plant: async (_d, w) => {
      const p = await tensorAt(w, `${Q}.in_perm`);
      const [a, b] = await readBytes(w, p.byteOffset, 2);
      await patchBytes(w, p.byteOffset + 2, [a!, b!]);
      return { code: "PACKED_VALUE_INVALID", file: w, tensor: `${Q}.in_perm`, byteOffset: p.byteOffset + 2, count: 1 };
    },
  },
  {
    name: "spqr: row_offsets decrease (CSR not monotone)",
    from: "spqr",
    plant: async (_d, w) => {
      const r = await tensorAt(w, `${Q}.row_offsets`);
      const offsets = new Int32Array((await readBytes(w, r.byteOffset, r.byteLength)).buffer);
      const i = offsets.findIndex((v, k) => k > 0 && offsets[k - 1]! > 0);
      await patchBytes(w, r.byteOffset + 4 * i, new Uint8Array(Int32Array.of(offsets[i - 1]! - 1).buffer));
      return { code: "PACKED_VALUE_INVALID", file: w, tensor: `${Q}.row_offsets`, byteOffset: r.byteOffset + 4 * i, count: 1 };
    },
  },
  {
    name: "spqr: an outlier column past in_features",
    from: "spqr",
    plant: async (_d, w) => {
      const c = await tensorAt(w, `${Q}.col_vals`);
      await patchBytes(w, c.byteOffset, u16le(200));
      return { code: "PACKED_VALUE_INVALID", file: w, tensor: `${Q}.col_vals`, byteOffset: c.byteOffset, count: 1 };
    },
  },
  {
    name: "spqr: the two copies of a second-order byte differ",
    from: "spqr",
    plant: async (_d, w) => {
      const dense = await tensorAt(w, `${Q}.dense_weights`);
      // Word 1 (tile 0, row 1) carries bits 54–61; bit 22 of its high half is bit 6 of its byte 6.
      const [byte] = await readBytes(w, dense.byteOffset + 8 + 6, 1);
      await patchBytes(w, dense.byteOffset + 8 + 6, [byte! ^ 0x40]);
      return { code: "PACKED_VALUE_INVALID", file: w, tensor: `${Q}.dense_weights`, byteOffset: dense.byteOffset + 8, count: 1 };
    },
  },
  {
    name: "spqr: the config's shapes disagree with a stored array",
    from: "spqr",
    plant: async (d, w) => {
      await patchJson(join(d, "config.json"), (c) => void (c["quantization_config"].shapes[`${Q}.col_vals.shape`] = 999));
      return { code: "QUANT_CONFIG_INVALID", file: join(d, "config.json"), tensor: `${Q}.col_vals`, count: 1 };
    },
  },
  {
    name: "spqr: the config's shapes describe a linear that is not stored",
    from: "spqr",
    plant: async (d) => {
      await patchJson(join(d, "config.json"), (c) => void (c["quantization_config"].shapes["model.layers.9.mlp.up_proj.dense_weights.shape"] = 3072));
      return { code: "TENSOR_MISSING", file: join(d, "config.json"), tensor: "model.layers.9.mlp.up_proj.dense_weights", count: 1 };
    },
  },
  {
    name: "spqr deep: a NaN outlier value",
    from: "spqr",
    deep: true,
    plant: async (_d, w) => {
      const c = await tensorAt(w, `${Q}.col_vals`);
      await patchBytes(w, c.byteOffset + 4 * 3 + 2, u16le(0x7e00));
      return { code: "NONFINITE_VALUE", file: w, tensor: `${Q}.col_vals`, byteOffset: c.byteOffset + 4 * 3, count: 1 };
    },
  },
  // ---- VPTQ (v8, k256 + residual 16, norm and perm)
  {
    name: "vptq: perm is not a permutation",
    from: "vptq",
    plant: async (_d, w) => {
      const p = await tensorAt(w, `${Q}.perm`);
      const [a, b] = await readBytes(w, p.byteOffset, 2);
      await patchBytes(w, p.byteOffset + 2, [a!, b!]);
      return { code: "PACKED_VALUE_INVALID", file: w, tensor: `${Q}.perm`, byteOffset: p.byteOffset + 2, count: 1 };
    },
  },
  {
    name: "vptq: a stored layer config_for_layers does not describe",
    from: "vptq",
    plant: async (d) => {
      await patchJson(join(d, "config.json"), (c) => void delete c["quantization_config"].config_for_layers[Q]);
      return { code: "QUANT_CONFIG_INVALID", file: join(d, "config.json"), tensor: `${Q}.indices`, count: 1 };
    },
  },
  {
    name: "vptq: config_for_layers describes a layer that is not stored",
    from: "vptq",
    plant: async (d) => {
      await patchJson(join(d, "config.json"), (c) => void (c["quantization_config"].config_for_layers["model.layers.7.mlp.up_proj"] = c["quantization_config"].config_for_layers[`model.layers.0.mlp.up_proj`]));
      return { code: "TENSOR_MISSING", file: join(d, "config.json"), tensor: "model.layers.7.mlp.up_proj.indices", count: 1 };
    },
  },
  {
    name: "vptq: weight_scale of the wrong shape",
    from: "vptq",
    plant: async (_d, w) => {
      const { dataStart } = await rewriteHeader(w, (h) => void (h[`${Q}.weight_scale`].shape = [2, 64]));
      return { code: "PACKED_SHAPE_MISMATCH", file: w, tensor: `${Q}.weight_scale`, byteOffset: dataStart + (await relativeBegin(w, `${Q}.weight_scale`)), count: 1 };
    },
  },
  {
    name: "vptq deep: a NaN centroid",
    from: "vptq",
    deep: true,
    plant: async (_d, w) => {
      const c = await tensorAt(w, `${Q}.centroids.weight`);
      await patchBytes(w, c.byteOffset + 2 * 5, u16le(0xfe00));
      return { code: "NONFINITE_VALUE", file: w, tensor: `${Q}.centroids.weight`, byteOffset: c.byteOffset + 2 * 5, count: 1 };
    },
  },
  {
    name: "vptq deep: the folder name claims v4-k256-16",
    from: "vptq",
    as: "tinystories-656K-vptq-v4-k256-16",
    deep: true,
    plant: async (d) => ({ code: "NAME_CLAIM_MISMATCH", file: d, count: 1 }),
  },
];


runHfCases("validate: SpQR and VPTQ checkpoints", cases);
