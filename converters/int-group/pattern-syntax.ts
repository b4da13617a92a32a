/**
 * The pattern syntax half of dynamic-pattern.ts: the limits, the refusal error, and the parser of
 * the Python `re` subset into a small AST (see dynamic-pattern.ts for the accepted syntax and why
 * the rest is refused). The NFA that matches the AST is dynamic-pattern.ts's.
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

// ---------------------------------------------------------------------------------------------
// Parsing (Python re syntax subset) into a small AST

export type CharSet = { ranges: [number, number][]; negate: boolean };
export type Assertion = "start" | "end" | "word" | "notWord";
export type Ast =
  | { t: "empty" }
  | { t: "char"; sets: CharSet[]; negate: boolean }
  | { t: "assert"; what: Assertion }
  | { t: "cat"; items: Ast[] }
  | { t: "alt"; items: Ast[] }
  | { t: "repeat"; body: Ast; min: number; max: number };

const DIGIT: [number, number][] = [[48, 57]];
export const WORD: [number, number][] = [[48, 57], [65, 90], [95, 95], [97, 122]];
const SPACE: [number, number][] = [[9, 13], [32, 32]];
const CLASS_ESCAPES: Record<string, CharSet> = {
  d: { ranges: DIGIT, negate: false }, D: { ranges: DIGIT, negate: true },
  w: { ranges: WORD, negate: false }, W: { ranges: WORD, negate: true },
  s: { ranges: SPACE, negate: false }, S: { ranges: SPACE, negate: true },
};
const CONTROL_ESCAPES: Record<string, number> = { n: 10, t: 9, r: 13, f: 12, v: 11, a: 7 };
const literal = (code: number): Ast => ({ t: "char", sets: [{ ranges: [[code, code]], negate: false }], negate: false });

export class Parser {
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
