import type { Checkpoint } from "../checkpoint.js";

export interface HubOptions {
  /** Hub endpoint; default $HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** Cache root holding `models--owner--name/`; default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** Access token; default $HF_TOKEN. */
  token?: string;
  /** Use the cache only; default true when $HF_HUB_OFFLINE is 1/true. */
  offline?: boolean;
}

export async function openHubCheckpoint(_id: string, _options: HubOptions = {}): Promise<Checkpoint> {
  throw new Error("not yet implemented");
}
