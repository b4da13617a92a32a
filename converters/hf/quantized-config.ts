import type { TargetFloatDType } from "../../formats/dtype.js";
import type { Checkpoint } from "../checkpoint.js";
import { writeFileAtomic, type AtomicDirectory } from "../io/atomic.js";
import { configTextWithDtype } from "../tensor-stream.js";

/**
 * The non-tensor files of a packed HF directory: config.json with the source's
 * `quantization_config` replaced by `quantConfig` (and the dtype value changed when `dtype` is
 * given), plus the source's side files (tokenizer and friends).
 */
export async function writeQuantizedConfigAndSideFiles(dir: AtomicDirectory, checkpoint: Checkpoint, quantConfig: Record<string, unknown>, dtype: TargetFloatDType | undefined): Promise<void> {
  const base = checkpoint.rawConfig === undefined ? {} : (({ quantization_config: _old, ...rest }) => rest)(checkpoint.rawConfig);
  await writeFileAtomic(dir.file("config.json"), configTextWithDtype(JSON.stringify({ ...base, quantization_config: quantConfig }, null, 2) + "\n", dtype)!);
  for (const [name, bytes] of checkpoint.sideFiles) await writeFileAtomic(dir.file(name), bytes);
}
