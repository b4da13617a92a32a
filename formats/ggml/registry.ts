import { BF16, F16, F32 } from "./float.js";
import { IQ_TYPES } from "./iq/index.js";
import { RAW_TYPES } from "./raw-types.js";
import { IQ4_NL } from "./iq4_nl.js";
import { IQ4_XS } from "./iq4_xs.js";
import { Q2_K } from "./q2_k.js";
import { Q3_K } from "./q3_k.js";
import { Q4_0 } from "./q4_0.js";
import { Q4_1 } from "./q4_1.js";
import { Q4_K } from "./q4_k.js";
import { Q5_0 } from "./q5_0.js";
import { Q5_1 } from "./q5_1.js";
import { Q5_K } from "./q5_k.js";
import { Q6_K } from "./q6_k.js";
import { Q8_0 } from "./q8_0.js";
import { TQ1_0 } from "./tq1_0.js";
import { TQ2_0 } from "./tq2_0.js";
import type { GgmlTypeCodec } from "./types.js";

/**
 * Every ggml type lmpack knows, by type id and by name. Types not listed here are refused by
 * the GGUF reader with their id (e.g. the removed Q4_2/Q4_3, or types newer than lmpack).
 */
const CODECS: readonly GgmlTypeCodec[] = [
  F32,
  F16,
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  IQ4_NL,
  IQ4_XS,
  BF16,
  TQ1_0,
  TQ2_0,
  ...IQ_TYPES,
  ...RAW_TYPES,
];

/** Index of `codecs` by `key`; a second codec with the same key is a programming error (gguf-py asserts the same). */
function indexBy<K>(codecs: readonly GgmlTypeCodec[], key: (c: GgmlTypeCodec) => K): Map<K, GgmlTypeCodec> {
  const map = new Map<K, GgmlTypeCodec>();
  for (const c of codecs) {
    const k = key(c);
    const other = map.get(k);
    if (other !== undefined) throw new Error(`ggml registry: ${c.name} (id ${c.id}) clashes with ${other.name} (id ${other.id})`);
    map.set(k, c);
  }
  return map;
}

const BY_ID = indexBy(CODECS, (c) => c.id);
const BY_NAME = indexBy(CODECS, (c) => c.name);

export function ggmlCodec(id: number): GgmlTypeCodec | undefined {
  return BY_ID.get(id);
}

export function ggmlCodecByName(name: string): GgmlTypeCodec | undefined {
  return BY_NAME.get(name.toUpperCase());
}

export function ggmlCodecs(): readonly GgmlTypeCodec[] {
  return CODECS;
}
