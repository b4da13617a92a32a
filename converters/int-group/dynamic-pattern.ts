/**
 * Module-name patterns from quantization configs (GPTQModel `dynamic` keys, auto-round
 * `extra_config` keys), matched in time linear in the name: the pattern is parsed into a
 * Thompson NFA and simulated state-set by state-set, so no pattern can backtrack. `new RegExp`
 * would let a hostile config.json hang the importer with "(a+)+$" or ".*.*.*.*.*x".
 *
 * Syntax is Python `re` (the tools that write these keys use `re.match` / `re.search`): literals,
 * `.`, classes `[...]` with ranges and `\d \w \s` (ASCII), groups `(...)`, `(?:...)`,
 * `(?P<name>...)`, alternation, quantifiers `* + ? {m} {m,} {,n} {m,n}` (a lazy `?` suffix is
 * accepted: it cannot change whether a name matches), anchors `^ $ \A \Z \b \B`. Refused, with a
 * reason: backreferences, lookaround, inline flags, possessive quantifiers, and a quantified group
 * that itself holds a quantifier: Python's own `re` backtracks exponentially on those, so no
 * config that GPTQModel or auto-round can load needs them. Real keys look like
 * `.*\.18\..*(gate|up).*`, `model\.layers\.0\..*`, `.*\.mlp\.gate_up_proj$`.
 */

/** Longest pattern accepted: real keys are under 200 characters (one layer range or module list). */
export const MAX_PATTERN_CHARS = 1024;
/** NFA states one pattern may compile to (counted repeats are expanded): bounds per-name work. */
export const MAX_PATTERN_STATES = 4096;
/** Largest count in `{m,n}`, as in sre's practical use; anything larger is not a module-name pattern. */
const MAX_REPEAT_COUNT = 1000;

export type PatternRefusal = "TOO_LONG" | "TOO_COMPLEX" | "NESTED_QUANTIFIER" | "BACKREFERENCE" | "LOOKAROUND" | "UNSUPPORTED" | "SYNTAX";

/** A pattern this matcher refuses; `reason` says why (SYNTAX: not a valid pattern at all). */
export class PatternError extends Error {
  override readonly name = "PatternError";
  constructor(readonly reason: PatternRefusal, readonly pattern: string, detail: string, readonly index?: number) {
    super(`${detail}${index === undefined ? "" : ` at character ${index}`}`);
  }
}

export interface NamePattern {
  readonly source: string;
  /** Number of NFA states: the per-character cost of `test`. */
  readonly stateCount: number;
  test(name: string): boolean;
}

/** "match": anchored at the name's start (re.match); "search": anywhere in it (re.search). */
export type Anchoring = "match" | "search";

export function compileNamePattern(source: string, anchoring: Anchoring): NamePattern {
  if (source.length > MAX_PATTERN_CHARS) throw new PatternError("TOO_LONG", source, `pattern is ${source.length} characters, over the ${MAX_PATTERN_CHARS} accepted`);
  const ast = new Parser(source).parse();
  const nfa = new NfaBuilder(source);
  const start = nfa.compile(ast, nfa.add({ kind: "match" }));
  return new NfaPattern(source, nfa.states, start, anchoring);
}

// ---------------------------------------------------------------------------------------------
// Parsing (Python re syntax subset) into a small AST

type CharSet = { ranges: [number, number][]; negate: boolean };
type Assertion = "start" | "end" | "word" | "notWord";
type Ast =
  | { t: "empty" }
  | { t: "char"; sets: CharSet[]; negate: boolean }
  | { t: "assert"; what: Assertion }
  | { t: "cat"; items: Ast[] }
  | { t: "alt"; items: Ast[] }
  | { t: "repeat"; body: Ast; min: number; max: number };

const DIGIT: [number, number][] = [[48, 57]];
const WORD: [number, number][] = [[48, 57], [65, 90], [95, 95], [97, 122]];
const SPACE: [number, number][] = [[9, 13], [32, 32]];
const CLASS_ESCAPES: Record<string, CharSet> = {
  d: { ranges: DIGIT, negate: false }, D: { ranges: DIGIT, negate: true },
  w: { ranges: WORD, negate: false }, W: { ranges: WORD, negate: true },
  s: { ranges: SPACE, negate: false }, S: { ranges: SPACE, negate: true },
};
const CONTROL_ESCAPES: Record<string, number> = { n: 10, t: 9, r: 13, f: 12, v: 11, a: 7 };
const literal = (code: number): Ast => ({ t: "char", sets: [{ ranges: [[code, code]], negate: false }], negate: false });

class Parser {
  private at = 0;
  constructor(private readonly src: string) {}

  parse(): Ast {
    const ast = this.alternation();
    if (this.at < this.src.length) throw this.fail("SYNTAX", "unbalanced parenthesis");
    return ast;
  }

  private fail(reason: PatternRefusal, detail: string): PatternError {
    return new PatternError(reason, this.src, detail, this.at);
  }

  private alternation(): Ast {
    const items = [this.sequence()];
    while (this.src[this.at] === "|") {
      this.at++;
      items.push(this.sequence());
    }
    return items.length === 1 ? items[0]! : { t: "alt", items };
  }

  private sequence(): Ast {
    const items: Ast[] = [];
    while (this.at < this.src.length && this.src[this.at] !== "|" && this.src[this.at] !== ")") items.push(this.quantified(this.atom()));
    return items.length === 0 ? { t: "empty" } : items.length === 1 ? items[0]! : { t: "cat", items };
  }

  private quantified(atom: Ast): Ast {
    const bounds = this.quantifier();
    if (bounds === undefined) return atom;
    if (atom.t === "assert" || atom.t === "empty") throw this.fail("SYNTAX", "nothing to repeat");
    if (this.src[this.at] === "?") this.at++; // lazy: same set of matching names
    if (this.src[this.at] === "+" || this.quantifierAhead()) throw this.fail("UNSUPPORTED", "possessive or repeated quantifier");
    if (bounds.max > 1 && repeats(atom)) throw this.fail("NESTED_QUANTIFIER", "a repeated group holds a repeat (catastrophic backtracking in Python's re)");
    return { t: "repeat", body: atom, ...bounds };
  }

  private quantifierAhead(): boolean {
    const c = this.src[this.at];
    return c === "*" || c === "?" || (c === "{" && braceQuantifier(this.src, this.at) !== undefined);
  }

  private quantifier(): { min: number; max: number } | undefined {
    const c = this.src[this.at];
    if (c === "*" || c === "+" || c === "?") {
      this.at++;
      return { min: c === "+" ? 1 : 0, max: c === "?" ? 1 : Infinity };
    }
    if (c !== "{") return undefined;
    const brace = braceQuantifier(this.src, this.at);
    if (brace === undefined) return undefined; // a literal "{", as in Python
    if (brace.min > MAX_REPEAT_COUNT || (brace.max !== Infinity && brace.max > MAX_REPEAT_COUNT)) throw this.fail("TOO_COMPLEX", `repeat count over ${MAX_REPEAT_COUNT}`);
    if (brace.min > brace.max) throw this.fail("SYNTAX", "min repeat greater than max repeat");
    this.at = brace.end;
    return { min: brace.min, max: brace.max };
  }

  private atom(): Ast {
    const c = this.src[this.at]!;
    this.at++;
    switch (c) {
      case "(": return this.group();
      case "[": return this.charClass();
      case ".": return { t: "char", sets: [{ ranges: [[10, 10]], negate: true }], negate: false };
      case "^": return { t: "assert", what: "start" };
      case "$": return { t: "assert", what: "end" };
      case "\\": return this.escape();
      case "*": case "+": case "?": throw this.fail("SYNTAX", "nothing to repeat");
      default: return literal(c.charCodeAt(0));
    }
  }

  private group(): Ast {
    if (this.src.startsWith("?", this.at)) {
      const rest = this.src.slice(this.at + 1);
      if (rest.startsWith(":")) this.at += 2;
      else if (/^P<[A-Za-z_]\w*>/.test(rest)) this.at += 1 + rest.indexOf(">") + 1;
      else if (/^(=|!|<=|<!)/.test(rest)) throw this.fail("LOOKAROUND", "lookahead and lookbehind are not supported");
      else if (rest.startsWith("P=")) throw this.fail("BACKREFERENCE", "backreferences are not supported");
      else throw this.fail("UNSUPPORTED", "inline flags, conditionals and other (?...) groups are not supported");
    }
    const body = this.alternation();
    if (this.src[this.at] !== ")") throw this.fail("SYNTAX", "missing )");
    this.at++;
    return body;
  }

  private escape(): Ast {
    const c = this.src[this.at];
    if (c === undefined) throw this.fail("SYNTAX", "bad escape (end of pattern)");
    this.at++;
    const set = CLASS_ESCAPES[c];
    if (set !== undefined) return { t: "char", sets: [set], negate: false };
    if (c === "A") return { t: "assert", what: "start" };
    if (c === "Z") return { t: "assert", what: "end" };
    if (c === "b") return { t: "assert", what: "word" };
    if (c === "B") return { t: "assert", what: "notWord" };
    if (/[1-9]/.test(c) || c === "k") throw this.fail("BACKREFERENCE", "backreferences are not supported");
    return literal(this.escapedCode(c));
  }

  /** The code unit of a single-character escape (outside or inside a class). */
  private escapedCode(c: string): number {
    const control = CONTROL_ESCAPES[c];
    if (control !== undefined) return control;
    if (c === "x" || c === "u") {
      const digits = c === "x" ? 2 : 4;
      const hex = this.src.slice(this.at, this.at + digits);
      if (!new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(hex)) throw this.fail("SYNTAX", `bad \\${c} escape`);
      this.at += digits;
      return parseInt(hex, 16);
    }
    if (/[0-9A-Za-z]/.test(c)) throw this.fail(c === "0" ? "UNSUPPORTED" : "SYNTAX", `bad escape \\${c}`);
    return c.charCodeAt(0);
  }

  private charClass(): Ast {
    const negate = this.src[this.at] === "^";
    if (negate) this.at++;
    const sets: CharSet[] = [];
    let first = true;
    for (;;) {
      const c = this.src[this.at];
      if (c === undefined) throw this.fail("SYNTAX", "unterminated character set");
      if (c === "]" && !first) break;
      first = false;
      this.at++;
      let lo: number;
      if (c === "\\") {
        const e = this.src[this.at];
        if (e === undefined) throw this.fail("SYNTAX", "bad escape (end of pattern)");
        this.at++;
        const set = CLASS_ESCAPES[e];
        if (set !== undefined) {
          sets.push(set);
          continue;
        }
        lo = e === "b" ? 8 : this.escapedCode(e);
      } else lo = c.charCodeAt(0);
      let hi = lo;
      if (this.src[this.at] === "-" && this.at + 1 < this.src.length && this.src[this.at + 1] !== "]") {
        this.at++;
        const h = this.src[this.at]!;
        this.at++;
        if (h === "\\") {
          const e = this.src[this.at];
          if (e === undefined || CLASS_ESCAPES[e] !== undefined) throw this.fail("SYNTAX", "bad character range");
          this.at++;
          hi = e === "b" ? 8 : this.escapedCode(e);
        } else hi = h.charCodeAt(0);
        if (hi < lo) throw this.fail("SYNTAX", "bad character range");
      }
      sets.push({ ranges: [[lo, hi]], negate: false });
    }
    this.at++;
    return { t: "char", sets, negate };
  }
}

/** `{m}`, `{m,}`, `{,n}`, `{m,n}` at `at`, or undefined when the brace is a literal. */
function braceQuantifier(src: string, at: number): { min: number; max: number; end: number } | undefined {
  const m = /^\{(\d*)(,?)(\d*)\}/.exec(src.slice(at, at + 24));
  if (m === null || (m[1] === "" && m[2] === "")) return undefined;
  const min = m[1] === "" ? 0 : Number(m[1]);
  const max = m[2] === "" ? min : m[3] === "" ? Infinity : Number(m[3]);
  return { min, max, end: at + m[0].length };
}

/** Whether an AST holds a quantifier that may repeat more than once. */
function repeats(ast: Ast): boolean {
  if (ast.t === "repeat") return ast.max > 1 || repeats(ast.body);
  if (ast.t === "cat" || ast.t === "alt") return ast.items.some(repeats);
  return false;
}

// ---------------------------------------------------------------------------------------------
// Thompson NFA, built back to front (each fragment is compiled with its continuation)

type State =
  | { kind: "char"; test: (code: number) => boolean; next: number }
  | { kind: "split"; a: number; b: number }
  | { kind: "assert"; what: Assertion; next: number }
  | { kind: "match" };

class NfaBuilder {
  readonly states: State[] = [];
  constructor(private readonly source: string) {}

  add(state: State): number {
    if (this.states.length >= MAX_PATTERN_STATES) throw new PatternError("TOO_COMPLEX", this.source, `pattern compiles to over ${MAX_PATTERN_STATES} states`);
    this.states.push(state);
    return this.states.length - 1;
  }

  compile(ast: Ast, next: number): number {
    switch (ast.t) {
      case "empty": return next;
      case "char": return this.add({ kind: "char", test: charTest(ast.sets, ast.negate), next });
      case "assert": return this.add({ kind: "assert", what: ast.what, next });
      case "cat": return ast.items.reduceRight((cont, item) => this.compile(item, cont), next);
      case "alt": {
        const starts = ast.items.map((item) => this.compile(item, next));
        return starts.reduceRight((rest, start) => this.add({ kind: "split", a: start, b: rest }));
      }
      case "repeat": {
        let cont = next;
        if (ast.max === Infinity) {
          const loop = this.add({ kind: "split", a: -1, b: next });
          (this.states[loop] as { a: number }).a = this.compile(ast.body, loop);
          cont = loop;
        } else {
          for (let k = ast.min; k < ast.max; k++) cont = this.add({ kind: "split", a: this.compile(ast.body, cont), b: cont });
        }
        for (let k = 0; k < ast.min; k++) cont = this.compile(ast.body, cont);
        return cont;
      }
    }
  }
}

function charTest(sets: CharSet[], negate: boolean): (code: number) => boolean {
  const inSet = (s: CharSet, code: number) => s.ranges.some(([lo, hi]) => code >= lo && code <= hi) !== s.negate;
  return (code) => sets.some((s) => inSet(s, code)) !== negate;
}

const isWordCode = (code: number) => WORD.some(([lo, hi]) => code >= lo && code <= hi);

class NfaPattern implements NamePattern {
  private readonly seen: Uint32Array;
  private generation = 0;

  constructor(readonly source: string, private readonly states: State[], private readonly start: number, private readonly anchoring: Anchoring) {
    this.seen = new Uint32Array(states.length);
  }

  get stateCount(): number {
    return this.states.length;
  }

  /** Simulates every thread at once: O(states × name length), whatever the pattern. */
  test(name: string): boolean {
    let current: number[] = [];
    this.nextGeneration();
    if (this.closure(this.start, name, 0, current)) return true;
    for (let at = 0; at < name.length; at++) {
      const code = name.charCodeAt(at);
      const next: number[] = [];
      this.nextGeneration();
      for (const s of current) {
        const state = this.states[s] as { test: (c: number) => boolean; next: number };
        if (state.test(code) && this.closure(state.next, name, at + 1, next)) return true;
      }
      if (this.anchoring === "search" && this.closure(this.start, name, at + 1, next)) return true;
      if (next.length === 0 && this.anchoring === "match") return false;
      current = next;
    }
    return false;
  }

  /** A fresh mark for `seen`, so the array is cleared only when the counter wraps. */
  private nextGeneration(): void {
    if (this.generation === 0xffffffff) {
      this.seen.fill(0);
      this.generation = 0;
    }
    this.generation++;
  }

  /** Adds `from`'s epsilon closure at position `at` to `into` (char states only); true on reaching the match state. */
  private closure(from: number, name: string, at: number, into: number[]): boolean {
    const stack = [from];
    while (stack.length > 0) {
      const s = stack.pop()!;
      if (this.seen[s] === this.generation) continue;
      this.seen[s] = this.generation;
      const state = this.states[s]!;
      if (state.kind === "match") return true;
      if (state.kind === "char") into.push(s);
      else if (state.kind === "split") stack.push(state.b, state.a);
      else if (holds(state.what, name, at)) stack.push(state.next);
    }
    return false;
  }
}

function holds(what: Assertion, name: string, at: number): boolean {
  if (what === "start") return at === 0;
  if (what === "end") return at === name.length;
  const before = at > 0 && isWordCode(name.charCodeAt(at - 1));
  const after = at < name.length && isWordCode(name.charCodeAt(at));
  return (before !== after) === (what === "word");
}
