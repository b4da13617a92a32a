import { createRequire } from "node:module";

/** "lmpack <version>", recorded in every file lmpack writes. */
export const PRODUCER = `lmpack ${(createRequire(import.meta.url)("../../package.json") as { version: string }).version}`;
