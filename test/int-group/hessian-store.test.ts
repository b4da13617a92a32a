import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { openHessianStore, writeHessianStore } from "../../converters/hessians/store.js";
import { FormatError } from "../../formats/errors.js";
import { tempDir } from "../helpers/paths.js";

const test = suite("hessian store");

test("writes one H per input, resolves aliases, refuses a size that does not match the layer", async () => {
  const work = await tempDir();
  try {
    const path = join(work.path, "hessians.safetensors");
    const h = Float64Array.from({ length: 9 }, (_, i) => i + 0.5);
    await writeHessianStore(path, [{ name: "model.layers.0.self_attn.q_proj", aliases: ["model.layers.0.self_attn.k_proj"], hessian: { size: 3, data: h, nSamples: 17 } }], "test");
    const store = await openHessianStore(work.path);
    try {
      const viaAlias = await store.get("model.layers.0.self_attn.k_proj", 3);
      assert.equal(Array.from(viaAlias!.data), Array.from(h));
      assert.is(viaAlias!.nSamples, 17);
      assert.is(await store.get("model.layers.0.mlp.up_proj", 3), undefined);
      const wrong = await store.get("model.layers.0.self_attn.q_proj", 4).then(() => undefined, (e: unknown) => e);
      assert.instance(wrong, FormatError);
      assert.is((wrong as FormatError).code, "SHAPE_INVALID");
    } finally {
      await store.close();
    }
  } finally {
    await work.cleanup();
  }
});

test.run();
