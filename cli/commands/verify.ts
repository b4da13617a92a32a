import type { ArgumentsCamelCase, Argv } from "yargs";
import { openCheckpoint } from "../../converters/open.js";
import { DEFAULT_MAX_RELATIVE_RMS, verifyCheckpoint, type TensorVerifyRow, type VerifyDevice } from "../../converters/verify/verify-checkpoint.js";
import { EXIT } from "../errors.js";

interface VerifyArgs {
  packed: string;
  against: string;
  device: VerifyDevice;
  maxRelativeRms: number;
  json: boolean;
}

export const verifyCommand = {
  command: "verify <packed>",
  describe: "Dequantize every tensor of a packed checkpoint (on the GPU when present) and compare it with the source: per-tensor error table and a verdict (exit 3 on failure)",
  builder: (yargs: Argv) =>
    yargs
      .positional("packed", { type: "string", demandOption: true, describe: "packed checkpoint: .lmpack, HF GPTQ/AWQ/AutoRound/SpQR/VPTQ/FP6 directory, GGUF" })
      .option("against", { type: "string", demandOption: true, describe: "the dense source checkpoint it was made from" })
      .option("device", { choices: ["auto", "cuda", "cpu"] as const, default: "auto" as const, describe: "auto: the GPU when one is usable, else the CPU reference; cuda: fail without one" })
      .option("max-relative-rms", { type: "number", default: DEFAULT_MAX_RELATIVE_RMS, describe: "fail a tensor whose relative RMS error √(Σ(w − ref)²/Σ ref²) exceeds this" }),
  handler: async (args: ArgumentsCamelCase<VerifyArgs>): Promise<number> => {
    const packed = await openCheckpoint(args.packed);
    const source = await openCheckpoint(args.against);
    try {
      if (!args.json) console.log(`${"tensor".padEnd(44)} ${"repr".padEnd(9)} ${"bits/w".padStart(7)} ${"max |err|".padStart(10)} ${"rel RMS".padStart(9)} ${"SNR dB".padStart(7)}  device  GPU=CPU`);
      const report = await verifyCheckpoint(packed, source, { device: args.device, maxRelativeRms: args.maxRelativeRms, ...(args.json ? {} : { onTensor: (row: TensorVerifyRow) => console.log(formatRow(row)) }) });
      if (args.json) console.log(JSON.stringify(report, (_key, value: unknown) => (typeof value === "number" && !Number.isFinite(value) ? String(value) : value), 2));
      else {
        console.log(`\ndevice: ${report.device}`);
        if (report.skipped.length > 0) console.log(`not in the source, not checked: ${report.skipped.join(", ")}`);
        for (const failure of report.failures) console.log(`FAIL ${failure}`);
        console.log(report.ok ? `verdict: PASS (${report.rows.length} tensors)` : `verdict: FAIL (${report.failures.length} of ${report.rows.length} tensors)`);
      }
      return report.ok ? EXIT.ok : EXIT.verificationFailed;
    } finally {
      await packed.close();
      await source.close();
    }
  },
};

function formatRow(r: TensorVerifyRow): string {
  const gpuCpu = r.gpuCpuMismatches === undefined ? "n/a" : r.gpuCpuMismatches === 0 ? "yes" : `NO (${r.gpuCpuMismatches})`;
  return `${r.name.padEnd(44)} ${r.representation.padEnd(9)} ${r.bitsPerWeight.toFixed(3).padStart(7)} ${r.maxAbsError.toExponential(2).padStart(10)} ${r.relativeRmsError.toExponential(2).padStart(9)} ${r.snrDb.toFixed(1).padStart(7)}  ${r.device.padEnd(6)}  ${gpuCpu}${r.ok ? "" : "  FAIL"}`;
}
