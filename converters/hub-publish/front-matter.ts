/**
 * YAML front matter of model cards: writing ours, and reading the top-level scalars (license,
 * license_name, license_link) of someone else's.
 *
 * Writing needs only mappings of scalars and lists of scalars, so it is done here rather than
 * with a YAML library: a string is written plain when it cannot be read back as anything else
 * (starts with a letter, only [A-Za-z0-9._/+-], not a YAML 1.1 boolean or null word), otherwise
 * double-quoted with JSON's escapes, which YAML's double-quoted style shares, plus \u escapes
 * for the characters YAML does not allow raw (C1 controls, DEL, U+2028/9, BOM).
 *
 * Reading takes only `key: value` lines at column 0 whose value is a scalar on the same line;
 * anything else (blocks, lists, anchors) is skipped, never guessed at.
 */

export type FrontMatterValue = string | number | boolean | readonly string[];

/** Words YAML 1.1 reads as booleans or null (the Hub's js-yaml and PyYAML both honour some). */
const RESERVED_WORDS = new Set(["y", "n", "yes", "no", "true", "false", "on", "off", "null", "~"]);
const PLAIN = /^[A-Za-z][A-Za-z0-9._/+-]*$/;
const KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;

export function yamlScalar(value: string | number | boolean): string {
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new RangeError(`front matter number must be finite, got ${value}`);
    return String(value);
  }
  if (PLAIN.test(value) && !RESERVED_WORDS.has(value.toLowerCase())) return value;
  return JSON.stringify(value).replace(/[\u007f-\u009f\u2028\u2029\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** `---` + one `key: value` (or key + `- item` lines) per entry + `---`, keys in the given order. */
export function emitFrontMatter(entries: readonly (readonly [string, FrontMatterValue | undefined])[]): string {
  const lines = ["---"];
  for (const [key, value] of entries) {
    if (value === undefined) continue;
    if (!KEY.test(key)) throw new RangeError(`front matter key must be a plain identifier, got ${JSON.stringify(key)}`);
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") lines.push(`${key}: ${yamlScalar(value)}`);
    else if (value.length === 0) lines.push(`${key}: []`);
    else lines.push(`${key}:`, ...value.map((item) => `- ${yamlScalar(item)}`));
  }
  lines.push("---");
  return lines.join("\n") + "\n";
}

/** The front matter block of a README (between the first two `---` lines), or undefined. */
export function frontMatterBlock(text: string): string | undefined {
  const normalised = text.replace(/^\ufeff/, "").replace(/\r\n/g, "\n");
  if (!normalised.startsWith("---\n")) return undefined;
  const end = normalised.indexOf("\n---", 3);
  if (end < 0) return undefined;
  return normalised.slice(4, end + 1);
}

/** Top-level `key: scalar` pairs of a README's front matter (see the file comment for what is read). */
export function readFrontMatterScalars(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const block = frontMatterBlock(text);
  if (block === undefined) return out;
  for (const line of block.split("\n")) {
    const match = /^([A-Za-z_][A-Za-z0-9_-]*):[ \t]+(\S.*)$/.exec(line);
    if (match === null) continue;
    const value = scalarOf(match[2]!.trim());
    if (value !== undefined && !out.has(match[1]!)) out.set(match[1]!, value);
  }
  return out;
}

function scalarOf(raw: string): string | undefined {
  if (raw.startsWith('"')) {
    const end = closingDoubleQuote(raw);
    if (end < 0) return undefined;
    try {
      return JSON.parse(raw.slice(0, end + 1)) as string;
    } catch {
      return undefined; // a YAML-only escape: not guessed at
    }
  }
  if (raw.startsWith("'")) {
    const match = /^'((?:[^']|'')*)'/.exec(raw);
    return match === null ? undefined : match[1]!.replace(/''/g, "'");
  }
  // Flow collections, anchors, aliases, tags and block scalars are not plain values.
  if (/^[[{&*!|>%@`]/.test(raw)) return undefined;
  const value = raw.replace(/\s+#.*$/, "").trim();
  return value === "" ? undefined : value;
}

function closingDoubleQuote(raw: string): number {
  for (let i = 1; i < raw.length; i++) {
    if (raw[i] === "\\") i++;
    else if (raw[i] === '"') return i;
  }
  return -1;
}
