import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { FormatError } from "../../formats/errors.js";
import { MAX_CONFIG_BYTES } from "../checkpoint.js";
import { readSmallFile } from "../io/json-file.js";
import { HUB_ID } from "../open.js";
import type { ArtifactFacts } from "./card-facts.js";
import { readFrontMatterScalars } from "./front-matter.js";

/**
 * The model a checkpoint was quantized from, and its license, from recorded facts only:
 *
 * - `--base owner/name`: the id as given; the license from that repo's README front matter
 *   (fetched through `readHubReadme`, the Hub the publish goes to).
 * - `--base <folder>`: the license from the folder's README front matter; the id from
 *   `--base-id`, else the HF cache path (`models--owner--name/snapshots/<sha>`), else the
 *   folder's config.json `_name_or_path` when that is a Hub id.
 * - no `--base`: what the published files record: config.json `_name_or_path`, GGUF
 *   `general.base_model.0.repo_url` and `general.license`.
 *
 * What stays unknown is left out of the card, with a warning; nothing is guessed.
 */

export interface BaseFacts {
  id: string | undefined;
  /** Where the id came from, for the card and the warnings. */
  idSource: string | undefined;
  license: string | undefined;
  licenseName: string | undefined;
  licenseLink: string | undefined;
  licenseSource: string | undefined;
}

export interface BaseOptions {
  base?: string;
  baseId?: string;
  artifacts: readonly ArtifactFacts[];
  /** README.md of a Hub repo, or undefined when it has none; undefined function = offline (dry run). */
  readHubReadme?: (repo: string, revision: string | undefined) => Promise<string | undefined>;
  warnings: string[];
}

const MAX_README_BYTES = 4 * 1024 * 1024;
const CACHE_SNAPSHOT = /(?:^|[\\/])models--([A-Za-z0-9][A-Za-z0-9._-]*)--([A-Za-z0-9][A-Za-z0-9._-]*)[\\/]snapshots[\\/][0-9a-f]{40}[\\/]?$/;
const HUB_URL_ID = /^https?:\/\/[^/]+\/([A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*)\/?$/;

export async function resolveBase(options: BaseOptions): Promise<BaseFacts> {
  const facts: BaseFacts = { id: undefined, idSource: undefined, license: undefined, licenseName: undefined, licenseLink: undefined, licenseSource: undefined };
  const setId = (id: string | undefined, source: string) => {
    if (facts.id === undefined && id !== undefined && isHubId(id)) [facts.id, facts.idSource] = [id, source];
  };
  const setLicense = (readme: string | undefined, source: string) => {
    const scalars = readme === undefined ? new Map<string, string>() : readFrontMatterScalars(readme);
    if (facts.license !== undefined || scalars.get("license") === undefined) return;
    [facts.license, facts.licenseName, facts.licenseLink, facts.licenseSource] = [scalars.get("license"), scalars.get("license_name"), scalars.get("license_link"), source];
  };
  if (options.baseId !== undefined) {
    if (!isHubId(options.baseId)) throw new FormatError("CONFIG_INVALID", "--base-id must be a Hub id (owner/name)", { actual: options.baseId });
    setId(options.baseId, "--base-id");
  }
  const base = options.base;
  if (base !== undefined && (await isDirectory(base))) {
    setLicense(await readOptional(join(base, "README.md")), `${base}/README.md`);
    const cached = CACHE_SNAPSHOT.exec(resolve(base));
    if (cached !== null) setId(`${cached[1]}/${cached[2]}`, "the HF cache path of --base");
    const config = await readOptional(join(base, "config.json"), MAX_CONFIG_BYTES);
    const nameOrPath = config === undefined ? undefined : nameOrPathOf(config, join(base, "config.json"));
    setId(nameOrPath, "_name_or_path in --base's config.json");
  } else if (base !== undefined) {
    if (!HUB_ID.test(base) || base.startsWith(".")) throw new FormatError("CONFIG_INVALID", "--base must be a model folder or a Hub id (owner/name[@revision])", { file: base });
    const [repo, revision] = base.split("@", 2) as [string, string | undefined];
    setId(repo, "--base");
    if (options.readHubReadme === undefined) options.warnings.push(`license of ${repo} not read (no network in a dry run)`);
    else setLicense(await options.readHubReadme(repo, revision), `README.md of ${repo}`);
  }
  for (const artifact of options.artifacts) {
    setId(artifact.nameOrPath, `_name_or_path in ${artifact.path || "config.json"}`);
    const url = artifact.general?.["general.base_model.0.repo_url"];
    setId(url === undefined ? undefined : HUB_URL_ID.exec(url)?.[1], `general.base_model.0.repo_url in ${artifact.path}`);
    const license = artifact.general?.["general.license"];
    if (facts.license === undefined && license !== undefined && license !== "") [facts.license, facts.licenseSource] = [license, `general.license in ${artifact.path}`];
  }
  if (facts.id === undefined) options.warnings.push("base model unknown: base_model is left out of the card (give --base owner/name, or --base <folder> with --base-id)");
  if (facts.license === undefined) options.warnings.push("license unknown: no license in the card (the base model's README front matter gives it: --base)");
  return facts;
}

/** owner/name exactly: a local path (absolute, ./relative, deeper, Windows) never matches. */
function isHubId(id: string): boolean {
  return HUB_ID.test(id) && !id.includes("@") && !id.startsWith(".") && !id.includes("..");
}

function nameOrPathOf(text: string, file: string): string | undefined {
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (cause) {
    throw new FormatError("CONFIG_INVALID", `not valid JSON: ${(cause as Error).message}`, { file });
  }
  const value = (config as Record<string, unknown> | null)?.["_name_or_path"];
  return typeof value === "string" ? value : undefined;
}

async function isDirectory(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isDirectory(), () => false);
}

async function readOptional(path: string, maxBytes = MAX_README_BYTES): Promise<string | undefined> {
  if (!(await stat(path).then((s) => s.isFile(), () => false))) return undefined;
  return new TextDecoder().decode(await readSmallFile(path, maxBytes, "CONFIG_INVALID"));
}
