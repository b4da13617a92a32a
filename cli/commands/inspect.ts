import type { ArgumentsCamelCase, Argv } from "yargs";
import { openCheckpoint } from "../../converters/open.js";
import { inspectCheckpoint } from "../../converters/inspect.js";
import { LmpackFile } from "../../converters/lmpack/reader.js";
import { EXIT } from "../errors.js";
import { terminalProgress } from "../progress.js";
import { renderInspect } from "../report.js";

interface InspectArgs {
  src: string;
  json: boolean;
  verify: boolean;
}

export const inspectCommand = {
  command: "inspect <src>",
  describe: "Show a checkpoint's layout, config, tensors, parameter count and bits per weight",
  builder: (yargs: Argv) =>
    yargs
      .positional("src", { type: "string", demandOption: true, describe: "model directory, .safetensors or .lmpack file, or Hub id owner/name[@revision]" })
      .option("verify", { type: "boolean", default: false, describe: "also verify every blob checksum (.lmpack); exit 3 on any mismatch" }),
  handler: async (args: ArgumentsCamelCase<InspectArgs>): Promise<number> => {
    const progress = args.json ? undefined : terminalProgress();
    const checkpoint = await openCheckpoint(args.src, progress === undefined ? {} : { hub: { progress } });
    try {
      const report = inspectCheckpoint(checkpoint);
      const failures = args.verify && checkpoint.layout === "lmpack" ? await verifyContainer(checkpoint.location) : [];
      if (args.json) {
        console.log(JSON.stringify({ ok: failures.length === 0, ...report, ...(args.verify ? { verification: { failures: failures.map((f) => f.toJSON()) } } : {}) }, null, 2));
      } else {
        console.log(renderInspect(report));
        if (args.verify) {
          for (const failure of failures) console.error(`lmpack: error ${failure.code}: ${failure.message}`);
          console.log(`\nverify:      ${failures.length === 0 ? "all checksums match" : `${failures.length} blob(s) corrupted`}`);
        }
      }
      return failures.length === 0 ? EXIT.ok : EXIT.verificationFailed;
    } finally {
      await checkpoint.close();
    }
  },
};

async function verifyContainer(path: string) {
  const file = await LmpackFile.open(path);
  try {
    return await file.verifyAll();
  } finally {
    await file.close();
  }
}
