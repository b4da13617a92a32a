import { createHash, type Hash } from "node:crypto";
import { crc32 } from "node:zlib";

export type ChecksumName = "crc32" | "sha256";

/** Incremental checksum over chunks; `digest()` gives the bytes stored in the header. */
export interface Checksummer {
  update(bytes: Uint8Array): void;
  digest(): Uint8Array;
}

export function createChecksummer(name: ChecksumName): Checksummer {
  if (name === "sha256") {
    const hash: Hash = createHash("sha256");
    return { update: (bytes) => void hash.update(bytes), digest: () => new Uint8Array(hash.digest()) };
  }
  let value = 0;
  return {
    update: (bytes) => {
      value = crc32(bytes, value);
    },
    digest: () => {
      const out = new Uint8Array(4);
      new DataView(out.buffer).setUint32(0, value, false);
      return out;
    },
  };
}

export const CHECKSUM_BYTES: Record<ChecksumName, number> = { crc32: 4, sha256: 32 };

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex");
}
