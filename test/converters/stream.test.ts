import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { convertFloatBytes } from "../../formats/dense/convert.js";
import type { FloatDType } from "../../formats/dtype.js";
import { exportLmpack } from "../../converters/lmpack/export.js";
import { exportSafetensors } from "../../converters/safetensors/export.js";
import { openCheckpoint } from "../../converters/open.js";
import { ChunkStream } from "../../converters/tensor-stream.js";
import { FIXTURE_MODEL, tempDir } from "../helpers/paths.js";

const test = suite("streaming with recycled buffers");

let work: Awaited<ReturnType<typeof tempDir>>;
test.before(async () => {
  work = await tempDir();
});
test.after(() => work.cleanup());

// Odd chunk sizes put chunk boundaries everywhere, so every tensor takes many trips round the rings.
for (const chunkBytes of [998, 4094, 65536 + 6]) {
  for (const to of ["F32", "F16", "BF16"] as const) {
    test(`chunks of ${chunkBytes} bytes → ${to} equal the whole-tensor conversion`, async () => {
      const checkpoint = await openCheckpoint(FIXTURE_MODEL);
      const stream = new ChunkStream(undefined, chunkBytes);
      for (const entry of checkpoint.tensors.slice(0, 12)) {
        const expected = convertFloatBytes(await entry.read(), entry.dtype as FloatDType, to);
        const got = new Uint8Array(expected.length);
        let at = 0;
        // Copy each chunk before asking for the next: that is the whole contract.
        for await (const chunk of stream.chunks(entry, to)) {
          got.set(chunk, at);
          at += chunk.length;
        }
        assert.is(at, expected.length, entry.name);
        assert.ok(Buffer.from(got).equals(Buffer.from(expected)), entry.name);
      }
      await checkpoint.close();
    });
  }
}

test("exports with tiny chunks: f32 then back to bf16, and through a container, stay bit-exact", async () => {
  const source = await openCheckpoint(FIXTURE_MODEL);
  await exportSafetensors(source, join(work.path, "f32"), { dtype: "F32", chunkBytes: 1020 });
  await exportLmpack(source, join(work.path, "m.lmpack"), { chunkBytes: 4098 });
  await source.close();
  const f32 = await openCheckpoint(join(work.path, "f32"));
  await exportSafetensors(f32, join(work.path, "bf16"), { dtype: "BF16", chunkBytes: 770 });
  await f32.close();
  const container = await openCheckpoint(join(work.path, "m.lmpack"));
  await exportSafetensors(container, join(work.path, "unpacked"), { chunkBytes: 334 });
  await container.close();
  const original = await readFile(join(FIXTURE_MODEL, "model.safetensors"));
  assert.ok(original.equals(await readFile(join(work.path, "bf16", "model.safetensors"))));
  assert.ok(original.equals(await readFile(join(work.path, "unpacked", "model.safetensors"))));
});

test.run();
