import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { compileNamePattern, MAX_PATTERN_CHARS, PatternError, type PatternRefusal } from "../../converters/int-group/dynamic-pattern.js";
import { MAX_MODULE_NAME_CHARS, parseHfQuantConfig, type HfIntQuantConfig } from "../../converters/int-group/hf-quant-config.js";
import { openCheckpoint } from "../../converters/open.js";
import { FormatError } from "../../formats/errors.js";
import { tempDir } from "../helpers/paths.js";
import { tinyConfig, writeHfDir } from "../helpers/packed-checkpoint.js";

/**
 * GPTQModel `dynamic` and auto-round `extra_config` keys are regexes a config.json supplies.
 * Hostile ones ("(a+)+$" and kin) are refused fast with QUANT_CONFIG_INVALID naming the file, the
 * key and the pattern; polynomial ones (".*.*.*…x") run in linear time; the keys GPTQModel and
 * vLLM's tests write still apply, with re.match (dynamic) and re.search (extra_config) semantics,
 * and agree with the JS engine on every real-looking pattern × module name.
 */
const test = suite("int-group: dynamic / extra_config patterns");
const FILE = "/models/x/config.json";
const GPTQ = { quant_method: "gptq", bits: 4, group_size: 128, sym: true, checkpoint_format: "gptq_v2" };
const FAST_MS = 1000;

function refusal(run: () => unknown): { error: unknown; ms: number } {
  const start = performance.now();
  try {
    run();
  } catch (error) {
    return { error, ms: performance.now() - start };
  }
  return { error: undefined, ms: performance.now() - start };
}

function assertRefusedKey(error: unknown, key: string, pattern: string, reason: PatternRefusal, file = FILE): void {
  assert.instance(error, FormatError, String(error));
  const e = error as FormatError;
  assert.is(e.code, "QUANT_CONFIG_INVALID");
  assert.is(e.file, file);
  assert.is(e.actual, pattern);
  assert.ok(e.message.includes(key), `message names the key: ${e.message}`);
  assert.instance(e.cause, PatternError);
  assert.is((e.cause as PatternError).reason, reason);
}

const hostile: { pattern: string; reason: PatternRefusal }[] = [
  { pattern: "(a+)+$", reason: "NESTED_QUANTIFIER" },
  { pattern: "model\\.(\\w*)*\\.weight", reason: "NESTED_QUANTIFIER" },
  { pattern: "((ab)*c)+", reason: "NESTED_QUANTIFIER" },
  { pattern: "(x+x+)+y", reason: "NESTED_QUANTIFIER" },
  { pattern: "(a)\\1", reason: "BACKREFERENCE" },
  { pattern: "(?P<n>a)(?P=n)", reason: "BACKREFERENCE" },
  { pattern: "(?<=model\\.)layers", reason: "LOOKAROUND" },
  { pattern: "model(?!\\.visual)", reason: "LOOKAROUND" },
  { pattern: "(?i)MODEL", reason: "UNSUPPORTED" },
  { pattern: "a*+b", reason: "UNSUPPORTED" },
  { pattern: `model\\.${"x".repeat(MAX_PATTERN_CHARS)}`, reason: "TOO_LONG" },
  { pattern: "(?:model\\.layers\\.){999}", reason: "TOO_COMPLEX" },
  { pattern: "a{900}b{900}c{900}d{900}e{900}", reason: "TOO_COMPLEX" },
  { pattern: "model\\.layers\\.(", reason: "SYNTAX" },
];

for (const prefix of ["+:", "-:", ""]) {
  for (const h of hostile) {
    test(`dynamic "${prefix}${h.pattern.slice(0, 40)}" → QUANT_CONFIG_INVALID (${h.reason}) in < ${FAST_MS} ms`, () => {
      const key = `${prefix}${h.pattern}`;
      const { error, ms } = refusal(() => parseHfQuantConfig({ ...GPTQ, dynamic: { "+:.*\\.18\\..*": { bits: 8 }, [key]: prefix === "-:" ? {} : { bits: 8 } } }, FILE));
      assertRefusedKey(error, key, h.pattern, h.reason);
      assert.ok(ms < FAST_MS, `${ms} ms`);
    });
  }
}

test("extra_config: a catastrophic key is refused; a key that is no pattern at all stays an exact name", () => {
  const AUTO_ROUND = { quant_method: "auto-round", bits: 4, group_size: 128, sym: true, packing_format: "auto_round:gptq" };
  const { error } = refusal(() => parseHfQuantConfig({ ...AUTO_ROUND, extra_config: { "(a|b+)*c": { bits: 8 } } }, FILE));
  assertRefusedKey(error, "(a|b+)*c", "(a|b+)*c", "NESTED_QUANTIFIER");
  const c = parseHfQuantConfig({ ...AUTO_ROUND, extra_config: { "model.layers.0.mlp[down": { bits: 8 }, "mlp\\.up_proj": { bits: 2 }, "model.layers.3.self_attn.q_proj": { bits: 16 } } }, FILE)!;
  assert.is(specBits(c, "model.layers.0.mlp[down"), 8); // exact
  assert.is(specBits(c, "model.layers.0.mlp.down_proj"), 4); // the invalid key is not a prefix pattern
  assert.is(specBits(c, "model.layers.7.mlp.up_proj"), 2); // re.search: anywhere in the name
  assert.is(c.layer("model.layers.3.self_attn.q_proj"), "skip"); // bits 16 = not quantized
});

test("a polynomial pattern (.*.*.*…x) is matched in linear time on the longest accepted name", () => {
  const key = `+:${".*".repeat(40)}x`;
  const c = parseHfQuantConfig({ ...GPTQ, dynamic: { [key]: { bits: 8 } } }, FILE)!;
  const start = performance.now();
  assert.is(specBits(c, "a".repeat(MAX_MODULE_NAME_CHARS)), 4);
  assert.is(specBits(c, `${"a".repeat(MAX_MODULE_NAME_CHARS - 1)}x`), 8);
  const ms = performance.now() - start;
  assert.ok(ms < FAST_MS, `${ms} ms`);
});

test("a module name longer than the bound is refused, naming it, when dynamic rules exist", () => {
  const c = parseHfQuantConfig({ ...GPTQ, dynamic: { "-:lm_head": {} } }, FILE)!;
  const { error } = refusal(() => c.layer(`model.${"a".repeat(MAX_MODULE_NAME_CHARS)}`));
  assert.instance(error, FormatError);
  assert.is((error as FormatError).code, "QUANT_CONFIG_INVALID");
  assert.ok((error as FormatError).tensor?.startsWith("model.aaa"));
  assert.equal(parseHfQuantConfig(GPTQ, FILE)!.layer(`model.${"a".repeat(MAX_MODULE_NAME_CHARS)}`), { bits: 4, groupSize: 128, sym: true });
});

const specBits = (c: HfIntQuantConfig, name: string) => {
  const spec = c.layer(name);
  return spec === "skip" ? "skip" : spec.bits;
};

test("GPTQModel's own dynamic example applies: skip layer 0, 8-bit gate/up in layers 18–21, first match wins", () => {
  // tests/test_dynamic.py of GPTQModel (keys as written there) plus a "+:" one and a "$"-anchored vLLM one.
  const dynamic: Record<string, unknown> = {
    "-:model\\.layers\\.0\\..*": {},
    ".*\\.18\\..*(gate|up).*": { bits: 8, group_size: 64 },
    "+:.*\\.19\\..*(gate|up).*": { bits: 8, group_size: 64 },
    ".*\\.(?:20|21)\\..*(gate|up).*": { bits: 8, group_size: 64, sym: false },
    "-:model\\.layers\\.1\\.mlp\\.down_proj$": {},
    "+:.*\\.mlp\\..*": { bits: 2 },
  };
  const c = parseHfQuantConfig({ ...GPTQ, dynamic }, FILE)!;
  assert.is(c.layer("model.layers.0.self_attn.q_proj"), "skip");
  assert.is(c.layer("model.layers.0.mlp.down_proj"), "skip");
  assert.equal(c.layer("model.layers.18.mlp.gate_proj"), { bits: 8, groupSize: 64, sym: true });
  assert.equal(c.layer("model.layers.19.mlp.up_proj"), { bits: 8, groupSize: 64, sym: true });
  assert.equal(c.layer("model.layers.21.mlp.gate_proj"), { bits: 8, groupSize: 64, sym: false });
  assert.equal(c.layer("model.layers.18.mlp.down_proj"), { bits: 2, groupSize: 128, sym: true });
  assert.is(c.layer("model.layers.1.mlp.down_proj"), "skip");
  assert.is(specBits(c, "model.layers.11.mlp.down_proj"), 2); // "$" and the literal "1\\." keep layer 11
  assert.equal(c.layer("model.layers.18.self_attn.o_proj"), { bits: 4, groupSize: 128, sym: true });
  assert.is(specBits(c, "xmodel.layers.0.self_attn.q_proj"), 4); // re.match: anchored at the start
});

test("the linear matcher agrees with the JS engine on real-looking patterns × module names (match and search)", () => {
  const patterns = [
    ".*\\.18\\..*(gate|up).*", "model\\.layers\\.0\\..*", ".*\\.mlp\\.gate_up_proj$", ".*down.*", "lm_head",
    "model\\.layers\\.([0-9]|1[0-5])\\.self_attn\\.[qkv]_proj", ".*\\.(?:1[0-9]|2[0-3])\\..*", ".*layers\\.\\d+\\.mlp\\.experts\\.\\d{1,3}\\..*",
    "^model\\.layers\\.\\d+\\.self_attn\\.o_proj\\b", "model\\.layers\\.[^.]+\\.mlp", ".*[^a-z_]down_proj$", ".*\\.[13579]\\..*", "(?:self_attn|mlp)\\.\\w+?_proj",
  ];
  const modules = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "mlp.gate_up_proj", "mlp.experts.17.down_proj"];
  const names = ["lm_head", "model.embed_tokens", "model.layers.x.mlp", ...Array.from({ length: 25 }, (_, l) => modules.map((m) => `model.layers.${l}.${m}`)).flat()];
  let matched = 0;
  for (const p of patterns) {
    for (const anchoring of ["match", "search"] as const) {
      const js = new RegExp(anchoring === "match" ? `^(?:${p})` : p);
      const mine = compileNamePattern(p, anchoring);
      for (const name of names) {
        assert.is(mine.test(name), js.test(name), `${anchoring} ${p} on ${name}`);
        if (js.test(name)) matched++;
      }
    }
  }
  assert.ok(matched > 100, `only ${matched} matching pairs: the table does not exercise matches`);
});

test("through openCheckpoint: a GPTQ directory whose dynamic holds (a+)+$ is refused fast, naming config.json", async () => {
  const work = await tempDir("lmpack-dynamic-");
  try {
    const dir = await writeHfDir(join(work.path, "m"), tinyConfig({ ...GPTQ, dynamic: { "-:(a+)+$": {} } }), [{ name: "model.embed_tokens.weight", dtype: "F16", shape: [2, 2], bytes: new Uint8Array(8) }]);
    const start = performance.now();
    const error = await openCheckpoint(dir).then((c) => c.close(), (e: unknown) => e);
    const ms = performance.now() - start;
    assertRefusedKey(error, "-:(a+)+$", "(a+)+$", "NESTED_QUANTIFIER", join(dir, "config.json"));
    assert.ok(ms < FAST_MS, `${ms} ms`);
  } finally {
    await work.cleanup();
  }
});

test.run();
