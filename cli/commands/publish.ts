import type { ArgumentsCamelCase, Argv } from "yargs";
import { UsageError } from "../../formats/errors.js";
import { DEFAULT_REVISION, hubSettings } from "../../converters/hf/hub.js";
import { listLocalFiles } from "../../converters/hub-publish/local-files.js";
import { hubReadmeReader, makeCard, type MadeCard } from "../../converters/hub-publish/make-card.js";
import { assertPublishToken, publishFolder, type PublishEvent } from "../../converters/hub-publish/publish.js";
import { redactError, redactSecret } from "../../converters/hub-publish/redact.js";
import { DEFAULT_RETRIES } from "../../converters/hub-publish/retry-fetch.js";
import { EXIT } from "../errors.js";

interface PublishArgs {
  dir: string;
  repo: string;
  private: boolean;
  revision: string;
  message: string | undefined;
  base: string | undefined;
  baseId: string | undefined;
  verifyReport: string | undefined;
  eval: string | undefined;
  baseEval: string | undefined;
  retries: number;
  dryRun: boolean;
  json: boolean;
}

const CARD = "README.md";

export const publishCommand = {
  command: "publish <dir>",
  describe: "Upload a folder to a Hugging Face Hub model repo (created if missing; LFS for large files; a rerun resumes and skips what the Hub already has), with a generated model card when the folder has no README.md",
  builder: (yargs: Argv) =>
    yargs
      .positional("dir", { type: "string", demandOption: true, describe: "folder to publish: an HF safetensors folder, and/or .lmpack, .gguf, .onnx files" })
      .option("repo", { type: "string", demandOption: true, describe: "owner/name of the model repo (HF_TOKEN must be allowed to write it)" })
      .option("private", { type: "boolean", default: false, describe: "create the repo private (an existing repo keeps its visibility)" })
      .option("revision", { type: "string", default: DEFAULT_REVISION, describe: "branch to commit to; created from main when missing" })
      .option("message", { type: "string", describe: "commit title" })
      .option("base", { type: "string", describe: "card: the model this was quantized from, a Hub id (owner/name) or a local folder; its README front matter gives the license" })
      .option("base-id", { type: "string", describe: "card: the Hub id of a --base folder, when its path or config.json does not name it" })
      .option("verify-report", { type: "string", describe: "card: the output of `lmpack verify --json` for this checkpoint" })
      .option("eval", { type: "string", describe: "card: the output of `lmpack eval --json` for this model" })
      .option("base-eval", { type: "string", describe: "card: the output of `lmpack eval --json` for the base model (perplexity before/after)" })
      .option("retries", { type: "number", default: DEFAULT_RETRIES, describe: "retries of a request that failed transiently (dropped connection, 5xx); 0 = stop at once (a rerun resumes)" })
      .option("dry-run", { type: "boolean", default: false, describe: "contact no one: print the files and the card that would be published" }),
  handler: async (args: ArgumentsCamelCase<PublishArgs>): Promise<number> => {
    if (!Number.isSafeInteger(args.retries) || args.retries < 0 || args.retries > 100) throw new UsageError("BAD_ARGUMENT", "--retries must be an integer from 0 to 100", { actual: args.retries });
    const settings = hubSettings();
    if (!args.dryRun) assertPublishToken(settings.token, args.repo);
    const files = await listLocalFiles(args.dir);
    const cardOptions = { base: args.base, baseId: args.baseId, verifyReport: args.verifyReport, evalReport: args.eval, baseEvalReport: args.baseEval };
    let card: MadeCard | undefined;
    const warnings: string[] = [];
    if (files.some((f) => f.path === CARD)) {
      if (Object.values(cardOptions).some((v) => v !== undefined)) warnings.push(`${CARD} exists and is published as it is: --base, --base-id, --verify-report, --eval and --base-eval are not used`);
    } else {
      try {
        card = await makeCard(args.dir, files, { repo: args.repo, ...defined(cardOptions), ...(args.dryRun ? {} : { readHubReadme: hubReadmeReader(settings.endpoint, settings.token) }) });
      } catch (error) {
        throw redactError(error, settings.token);
      }
      warnings.push(...card.warnings);
    }
    if (!args.json) for (const warning of warnings) console.error(`lmpack: warning: ${warning}`);
    if (args.dryRun) {
      if (args.json) console.log(JSON.stringify({ ok: true, dryRun: true, repo: args.repo, files: files.map((f) => ({ path: f.path, nBytes: f.nBytes })), card: card?.text, warnings }, null, 2));
      else {
        for (const f of files) console.error(`lmpack: would publish ${f.path} (${f.nBytes} bytes)`);
        if (card !== undefined) process.stdout.write(card.text);
      }
      return EXIT.ok;
    }
    const result = await publishFolder({
      dir: args.dir,
      repo: args.repo,
      revision: args.revision,
      private: args.private,
      retry: { retries: args.retries },
      ...(args.message === undefined ? {} : { message: args.message }),
      ...(card === undefined ? {} : { generated: new Map([[CARD, new TextEncoder().encode(card.text)]]) }),
      ...(args.json ? {} : { onEvent: (event: PublishEvent) => printEvent(event, settings.token) }),
    });
    if (args.private && !result.created) warnings.push(`${args.repo} already existed: its visibility was left as it is (--private applies to new repos)`);
    if (args.json) console.log(JSON.stringify({ ok: true, ...result, card: card === undefined ? "kept" : "generated", warnings }, null, 2));
    else {
      if (args.private && !result.created) console.error(`lmpack: warning: ${warnings.at(-1)}`);
      const committed = result.files.filter((f) => f.status === "committed").length;
      if (result.commit === undefined) console.error(`lmpack: ${result.url} (${result.revision}) already holds every file as it is; nothing committed`);
      else console.error(`lmpack: committed ${committed} file${committed === 1 ? "" : "s"} to ${result.url} (${result.revision}, commit ${result.commit.slice(0, 12)}); ${megabytes(result.lfsBytesSent)} sent to LFS storage`);
    }
    return EXIT.ok;
  },
};

function printEvent(event: PublishEvent, token: string | undefined): void {
  if (event.kind === "repo") console.error(`lmpack: ${event.created ? "created" : "using existing repo"} ${event.url}`);
  else if (event.kind === "plan") console.error(`lmpack: ${event.toCommit} file${event.toCommit === 1 ? "" : "s"} to commit (${megabytes(event.bytesToCommit)}), ${event.unchanged} unchanged`);
  else if (event.kind === "file") console.error(`lmpack: ${event.path} done`);
  else if (event.kind === "retry") {
    // Storage URLs are presigned: their query strings are credentials, so only origin and path are shown.
    const url = new URL(event.url);
    console.error(redactSecret(`lmpack: ${event.method} ${url.origin}${url.pathname} failed (${event.reason}); retry ${event.attempt} in ${(event.delayMs / 1000).toFixed(1)} s`, token));
  }
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

function defined<T extends Record<string, unknown>>(object: T): { [K in keyof T]?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined)) as { [K in keyof T]?: Exclude<T[K], undefined> };
}
