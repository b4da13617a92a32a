import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Structure-aware inputs for the JSON targets (hf-config, tokenizer). Byte mutations of JSON text
 * almost always break the syntax, and V8's JSON.parse is not ours to test: what lmpack's config
 * readers must survive is valid JSON of the wrong shape (a number where a list was, a null inside
 * a list, a missing key, a 2^53 count). So these targets read their input as an edit script over
 * one of their committed seed documents:
 *
 *   byte 0            which base document (index modulo the number of seeds)
 *   then, repeated    op (1 byte) · node (2 bytes, LE, modulo the node count) · operand (1 byte)
 *                     [· string bytes, for the ops that take a string: length = operand % 32]
 *
 * Nodes are numbered in depth-first order over the current tree. Ops: replace a node with a
 * value from VALUES, with a copy of another node, or with a string from the input; delete it
 * from its parent; rename an object key. libFuzzer mutates the script, coverage guides it.
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Replacement values: each is a shape some reader might not expect where another one stood. */
const VALUES: readonly Json[] = [
  null, true, false, 0, -1, 1, 0.5, -0.5, 2 ** 31, 2 ** 32, 2 ** 53 + 2, 1e308, -1e308,
  "", "a", "__proto__", "constructor", "Sequence", "BPE", "gptq", ".*", "(a+)+$",
  [], [null], [1, 2], [[]], ["a", "b"], {}, { type: null }, { a: null }, { "": 1 },
];

/** Edits per input: enough to combine a few changes; each edit walks the whole tree. */
const MAX_EDITS = 64;
/** Copies stop once the tree is this big, so doubling a node cannot blow the document up. */
const MAX_NODES = 10_000;
/**
 * Nesting limit for copies and wraps: copying an ancestor into its own subtree doubles the depth,
 * and a few thousand levels overflow the stack in structuredClone and JSON.stringify (the harness,
 * not a reader: found by the hf-config target's first long run). Real configs nest 4 or 5 deep.
 */
const MAX_DEPTH = 64;

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** The committed seed documents of a target (bench/fuzz/seeds/<target>/), each decoded by `parse`. */
export function loadBaseDocuments(target: string, parse: (bytes: Uint8Array) => Json): Json[] {
  const dir = join(ROOT, "bench", "fuzz", "seeds", target);
  return readdirSync(dir).sort().map((name) => parse(readFileSync(join(dir, name))));
}

interface Slot {
  parent: Json[] | { [key: string]: Json } | undefined;
  key: string | number;
  value: Json;
  depth: number;
}

function slots(root: Json): Slot[] {
  const out: Slot[] = [{ parent: undefined, key: "", value: root, depth: 0 }];
  for (let i = 0; i < out.length && out.length < 65_536; i++) {
    const { value: v, depth } = out[i]!;
    if (Array.isArray(v)) v.forEach((child, k) => out.push({ parent: v, key: k, value: child, depth: depth + 1 }));
    else if (v !== null && typeof v === "object") for (const [k, child] of Object.entries(v)) out.push({ parent: v, key: k, value: child, depth: depth + 1 });
  }
  return out;
}

function set(root: { doc: Json }, slot: Slot, value: Json): void {
  if (slot.parent === undefined) root.doc = value;
  else if (Array.isArray(slot.parent)) slot.parent[slot.key as number] = value;
  else Object.defineProperty(slot.parent, slot.key, { value, enumerable: true, writable: true, configurable: true });
}

/** The document `data` describes (a fresh copy: bases are never changed). */
export function mutatedDocument(bases: readonly Json[], data: Uint8Array): Json {
  if (bases.length === 0) throw new Error("json-mutation: no base documents");
  const root = { doc: structuredClone(bases[(data[0] ?? 0) % bases.length]!) };
  const text = new TextDecoder();
  for (let at = 1, edits = 0; at + 4 <= data.length && edits < MAX_EDITS; edits++) {
    const op = data[at]! % 6;
    const nodes = slots(root.doc);
    const treeDepth = nodes.reduce((max, n) => Math.max(max, n.depth), 0);
    const slot = nodes[(data[at + 1]! | (data[at + 2]! << 8)) % nodes.length]!;
    const operand = data[at + 3]!;
    at += 4;
    const string = () => {
      const s = text.decode(data.subarray(at, at + (operand % 32)));
      at += operand % 32;
      return s;
    };
    switch (op) {
      case 0: set(root, slot, structuredClone(VALUES[operand % VALUES.length]!)); break;
      case 1: if (nodes.length < MAX_NODES && slot.depth + treeDepth < MAX_DEPTH) set(root, slot, structuredClone(nodes[operand % nodes.length]!.value)); break;
      case 2: set(root, slot, string()); break;
      case 3:
        if (Array.isArray(slot.parent)) slot.parent.splice(slot.key as number, 1);
        else if (slot.parent !== undefined) delete slot.parent[slot.key as string];
        break;
      case 4:
        if (slot.parent !== undefined && !Array.isArray(slot.parent)) {
          const renamed = string();
          delete slot.parent[slot.key as string];
          Object.defineProperty(slot.parent, renamed, { value: slot.value, enumerable: true, writable: true, configurable: true });
        }
        break;
      default: if (treeDepth < MAX_DEPTH) set(root, slot, [slot.value]); break;
    }
  }
  return root.doc;
}

export type { Json };
