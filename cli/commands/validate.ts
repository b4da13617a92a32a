import type { ArgumentsCamelCase, Argv } from "yargs";
import { validatePath, type Finding } from "../../converters/validate/index.js";
import { DEFAULT_MAX_RELATIVE_RMS } from "../../converters/verify/verify-checkpoint.js";
import { EXIT } from "../errors.js";

interface ValidateArgs {
  path: string;
  deep: boolean;
  base: string | undefined;
  maxRelativeRms: number;
  json: boolean;
}

export const validateCommand = {
  command: "validate <path>",
  describe: "Check a checkpoint for every structural problem (and with --deep, numeric ones): a table of findings with file, tensor and byte offset; exit 0 when clean, 2 when any error is found (1 usage, 70 internal)",
  builder: (yargs: Argv) =>
    yargs
      .positional("path", { type: "string", demandOption: true, describe: "HF directory (dense, GPTQ/AWQ/AutoRound, SpQR, VPTQ, FP6), .safetensors, .lmpack, .gguf, .onnx file or ONNX export folder" })
      .option("deep", { type: "boolean", default: false, describe: "also read the data: NaN/Inf or degenerate scales, codebooks, outliers and weights; dequantized layers; bit widths the name claims" })
      .option("base", { type: "string", describe: "the dense model the checkpoint was made from: each dequantized layer is compared with it (implies --deep)" })
      .option("max-relative-rms", { type: "number", default: DEFAULT_MAX_RELATIVE_RMS, describe: "with --base: report a layer whose relative RMS error against the base exceeds this" }),
  handler: async (args: ArgumentsCamelCase<ValidateArgs>): Promise<number> => {
    const report = await validatePath(args.path, { deep: args.deep, ...(args.base === undefined ? {} : { base: args.base }), maxRelativeRms: args.maxRelativeRms });
    if (args.json) console.log(JSON.stringify(report, null, 2));
    else {
      if (report.findings.length > 0) console.log(table(report.findings));
      const errors = report.findings.filter((f) => f.severity === "error").length;
      const warnings = report.findings.length - errors;
      const bits = report.packedBitsPerWeight === undefined ? "" : `, packed linears ${report.packedBitsPerWeight.toFixed(3)} bits/weight stored`;
      const what = `${report.layout}, ${report.tensorsChecked} tensors${bits}${args.deep || args.base !== undefined ? ", deep" : ""}`;
      console.log(report.ok ? `verdict: VALID (${what}${warnings > 0 ? `; ${warnings} warning${warnings === 1 ? "" : "s"}` : ""})` : `verdict: INVALID (${errors} error${errors === 1 ? "" : "s"}${warnings > 0 ? `, ${warnings} warning${warnings === 1 ? "" : "s"}` : ""}; ${what})`);
    }
    return report.ok ? EXIT.ok : EXIT.invalidInput;
  },
};

/** One line per finding: severity, code, file, tensor, byte offset, then what is wrong with expected/actual. */
function table(findings: Finding[]): string {
  const rows = findings.map((f) => [f.severity === "error" ? "ERROR" : "warn", f.code, f.file, f.tensor ?? "-", f.byteOffset === undefined ? "-" : String(f.byteOffset), message(f)]);
  const header = ["", "code", "file", "tensor", "byte", "problem"];
  const widths = header.slice(0, 5).map((h, i) => Math.min(60, Math.max(h.length, ...rows.map((r) => r[i]!.length))));
  const line = (r: string[]) => r.map((cell, i) => (i < 5 ? cell.padEnd(widths[i]!) : cell)).join("  ");
  return [line(header), ...rows.map(line)].join("\n");
}

function message(f: Finding): string {
  if (f.expected !== undefined && f.actual !== undefined) return `${f.message} (expected ${f.expected}, got ${f.actual})`;
  if (f.expected !== undefined) return `${f.message} (expected ${f.expected})`;
  if (f.actual !== undefined) return `${f.message} (got ${f.actual})`;
  return f.message;
}
