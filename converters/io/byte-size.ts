import { UsageError } from "../../formats/errors.js";

const UNITS: Record<string, number> = {
  B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12,
  KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40,
};

/**
 * Parses sizes as transformers' `max_shard_size` does: "2GB" = 2·10^9 bytes, "2GiB" = 2·2^30;
 * a bare number is bytes.
 */
export function parseByteSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*$/i.exec(text);
  const unit = UNITS[(match?.[2] ?? "B").toUpperCase()];
  if (match === null || unit === undefined) {
    throw new UsageError("BAD_ARGUMENT", `cannot read "${text}" as a size (examples: 500MB, 2GB, 4GiB)`);
  }
  const bytes = Math.floor(Number(match[1]) * unit);
  if (!(bytes > 0)) throw new UsageError("BAD_ARGUMENT", `size must be positive, got "${text}"`);
  return bytes;
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let i = 0;
  while (value >= 1000 && i < units.length - 1) {
    value /= 1000;
    i++;
  }
  return `${i === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${units[i]}`;
}
