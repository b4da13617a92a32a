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
import { MAX_PATTERN_CHARS, MAX_PATTERN_STATES, Parser, PatternError, WORD, type Assertion, type Ast, type CharSet } from "./pattern-syntax.js";

export { MAX_PATTERN_CHARS, MAX_PATTERN_STATES, PatternError, type PatternRefusal } from "./pattern-syntax.js";

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
