import { IoError } from "../../formats/errors.js";
import { hubFetch } from "../hf/hub-download.js";
import { PRODUCER } from "../producer.js";
import { resolveBase } from "./base-model.js";
import { renderCard, type CardFacts } from "./card.js";
import { readArtifacts } from "./card-facts.js";
import type { LocalFile } from "./local-files.js";
import { readEvalReport, readVerifyReport } from "./reports.js";

/** The README.md a folder gets when it has none: facts from its files and the given reports. */

export interface MakeCardOptions {
  /** owner/name */
  repo: string;
  /** The source model: a folder or a Hub id (see base-model.ts). */
  base?: string;
  baseId?: string;
  /** `lmpack verify --json` output for this checkpoint. */
  verifyReport?: string;
  /** `lmpack eval --json` outputs: this model's and the base model's. */
  evalReport?: string;
  baseEvalReport?: string;
  /** Reads a Hub repo's README.md (undefined when it has none); absent = offline. */
  readHubReadme?: (repo: string, revision: string | undefined) => Promise<string | undefined>;
}

export interface MadeCard {
  text: string;
  facts: CardFacts;
  /** What the card had to leave out, and why. */
  warnings: string[];
}

/** A README larger than this is not read for its license (real ones are tens of KB). */
const MAX_HUB_README_BYTES = 4 * 1024 * 1024;

export async function makeCard(dir: string, files: readonly LocalFile[], options: MakeCardOptions): Promise<MadeCard> {
  const warnings: string[] = [];
  const artifacts = await readArtifacts(dir, files);
  if (artifacts.length === 0) warnings.push("no model files recognised (an HF safetensors folder, .lmpack, .gguf or .onnx): the card describes no quantization");
  const base = await resolveBase({ ...pick(options, ["base", "baseId", "readHubReadme"]), artifacts, warnings });
  const names = new Set(artifacts.flatMap((a) => a.tensorNames));
  const facts: CardFacts = {
    repo: options.repo,
    base,
    artifacts,
    verify: options.verifyReport === undefined ? undefined : await readVerifyReport(options.verifyReport, names),
    evalModel: options.evalReport === undefined ? undefined : await readEvalReport(options.evalReport),
    evalBase: options.baseEvalReport === undefined ? undefined : await readEvalReport(options.baseEvalReport),
    producer: PRODUCER,
  };
  return { text: renderCard(facts), facts, warnings };
}

/** Reads README.md of a Hub repo with the publish's endpoint and token; undefined when absent. */
export function hubReadmeReader(endpoint: string, token: string | undefined): (repo: string, revision: string | undefined) => Promise<string | undefined> {
  return async (repo, revision) => {
    const url = `${endpoint}/${repo}/resolve/${encodeURIComponent(revision ?? "main")}/README.md`;
    let response: Response;
    try {
      response = await hubFetch(url, { headers: token === undefined ? {} : { Authorization: `Bearer ${token}` } }, `${repo}/README.md`);
    } catch (error) {
      if (error instanceof IoError && error.code === "HUB_NOT_FOUND") return undefined;
      throw error;
    }
    const declared = Number(response.headers.get("content-length") ?? "0");
    if (declared > MAX_HUB_README_BYTES) {
      await response.body?.cancel().catch(() => undefined);
      throw new IoError("NETWORK", "the base model's README.md is larger than lmpack reads", { file: `${repo}/README.md`, expected: `<= ${MAX_HUB_README_BYTES} bytes`, actual: declared });
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes.length > MAX_HUB_README_BYTES) throw new IoError("NETWORK", "the base model's README.md is larger than lmpack reads", { file: `${repo}/README.md`, actual: bytes.length });
    return new TextDecoder().decode(bytes);
  };
}

function pick<T extends object, K extends keyof T>(object: T, keys: readonly K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const key of keys) if (object[key] !== undefined) out[key] = object[key];
  return out;
}
