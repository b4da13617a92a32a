import { join } from "node:path";
import { suite } from "uvu";
import { SHARED_DIR, tempDir } from "../helpers/paths.js";
import { copyCheckpoint, expectFound, tensorNames, type Expected } from "./plant.js";

/**
 * The table runner of the quantized-HF part of the corrupted suite: each case copies one of the
 * shared tinystories-656K checkpoints (GPTQ 4-bit, FP6, SpQR, VPTQ), plants its defect and
 * expects exactly that finding (plant.ts `assertFound`).
 */

export interface HfCase {
  name: string;
  from: "gptq-4bit" | "fp6" | "spqr" | "vptq";
  /** Folder name of the copy (the name is part of what --deep checks). */
  as?: string;
  /** Keep the checkpoint's SHA256SUMS in the copy. */
  sums?: boolean;
  deep?: boolean;
  /** Compare with the base model (tinystories-656K). */
  base?: boolean;
  plant(dir: string, weights: string): Promise<Expected>;
}

export const BASE = join(SHARED_DIR, "models", "tinystories-656K");
export const Q = "model.layers.0.self_attn.q_proj";

export function runHfCases(title: string, cases: readonly HfCase[]): void {
  const test = suite(title);
  let work: Awaited<ReturnType<typeof tempDir>>;
  test.before(async () => {
    work = await tempDir("lmpack-validate-quant-");
  });
  test.after(() => work.cleanup());
  cases.forEach((c, i) => {
    test(c.name, async () => {
      const source = join(SHARED_DIR, "checkpoints", `tinystories-656K-${c.from}`);
      const dir = await copyCheckpoint(source, join(work.path, `case-${i}`, c.as ?? `tinystories-656K-${c.from}`), c.sums ?? false);
      const expected = await c.plant(dir, join(dir, "model.safetensors"));
      await expectFound(dir, expected, { deep: c.deep ?? false, ...(c.base === true ? { base: BASE } : {}) });
    });
  });
  test.run();
}

/** The first module (in storage order) that stores a tensor ending in `suffix`. */
export async function firstModule(weights: string, suffix: string): Promise<string> {
  return (await tensorNames(weights)).find((n) => n.endsWith(suffix))!.slice(0, -suffix.length);
}
