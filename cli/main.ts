#!/usr/bin/env node
import yargs, { type Argv } from "yargs";
import { hideBin } from "yargs/helpers";
import { PRODUCER } from "../converters/producer.js";
import { convertCommand } from "./commands/convert.js";
import { inspectCommand } from "./commands/inspect.js";
import { quantizeCommand } from "./commands/quantize.js";
import { calibrateCommand } from "./commands/calibrate.js";
import { evalCommand } from "./commands/eval.js";
import { verifyCommand } from "./commands/verify.js";
import { publishCommand } from "./commands/publish.js";
import { validateCommand } from "./commands/validate.js";
import { UsageError } from "../formats/errors.js";
import { EXIT, reportError } from "./errors.js";

/**
 * The lmpack command line: argument parsing only. Each command's handler calls the library and
 * returns an exit code; every error becomes one line (see errors.ts).
 */
type Handler = (args: never) => Promise<number>;

export async function main(argv: string[]): Promise<number> {
  const json = argv.includes("--json");
  let exitCode: number = EXIT.ok;
  const wrap = (handler: Handler) => async (args: unknown) => {
    try {
      exitCode = await handler(args as never);
    } catch (error) {
      exitCode = reportError(error, json);
    }
  };
  const cli: Argv = yargs(argv)
    .scriptName("lmpack")
    .usage("$0 <command> [options]\n\nConvert and pack large-language-model weights.")
    .option("json", { type: "boolean", default: false, global: true, describe: "machine-readable output on stdout" })
    .command({ ...inspectCommand, handler: wrap(inspectCommand.handler as Handler) })
    .command({ ...convertCommand, handler: wrap(convertCommand.handler as Handler) })
    .command({ ...quantizeCommand, handler: wrap(quantizeCommand.handler as Handler) })
    .command({ ...calibrateCommand, handler: wrap(calibrateCommand.handler as Handler) })
    .command({ ...evalCommand, handler: wrap(evalCommand.handler as Handler) })
    .command({ ...verifyCommand, handler: wrap(verifyCommand.handler as Handler) })
    .command({ ...publishCommand, handler: wrap(publishCommand.handler as Handler) })
    .command({ ...validateCommand, handler: wrap(validateCommand.handler as Handler) })
    .example("$0 inspect ./my-model", "layout, config, tensors, parameter count")
    .example("$0 convert ./my-model --to lmpack --out model.lmpack", "pack into one checksummed container")
    .example("$0 convert owner/name --to safetensors --dtype f32 --max-shard-size 2GB --out ./f32", "download from the Hub, widen, shard")
    .demandCommand(1, "name a command: inspect, convert, quantize, calibrate, eval, verify, publish or validate")
    .strict()
    .version(PRODUCER.replace("lmpack ", ""))
    .help()
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((message, error) => {
      // Throwing stops yargs before it runs a handler with arguments that failed validation.
      throw error ?? new UsageError("BAD_ARGUMENT", `${message} (run "lmpack --help" for usage)`);
    });
  try {
    await cli.parseAsync();
  } catch (error) {
    return reportError(error, json);
  }
  return exitCode;
}

main(hideBin(process.argv)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.exitCode = reportError(error, process.argv.includes("--json"));
  },
);
