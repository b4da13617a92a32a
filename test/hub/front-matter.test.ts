import { suite } from "uvu";
import * as assert from "uvu/assert";
import { emitFrontMatter, frontMatterBlock, readFrontMatterScalars } from "../../converters/hub-publish/front-matter.js";

/**
 * The model card's front matter (converters/hub-publish/front-matter.ts): every scalar lmpack
 * writes reads back the same through a real YAML parser, in both YAML versions (the Hub's parser
 * and older ones differ on 1.1 booleans and number-like strings).
 */
const test = suite("hub publish: front matter");

/** eemeli/yaml, a devDependency: an independent parser for the front matter lmpack writes. */
const YAML_PACKAGE = "yaml";
type YamlParse = (text: string, options?: { version?: "1.1" | "1.2" }) => unknown;
const yamlParse = ((await import(YAML_PACKAGE)) as { parse: YamlParse }).parse;

const yamlCases: { name: string; value: string | number | boolean | string[] }[] = [
  { name: "a plain id", value: "owner/name-1.5" },
  { name: "YAML 1.1 booleans", value: ["yes", "No", "on", "OFF", "y", "n", "true", "False", "null", "~"] },
  { name: "number-like strings", value: ["4-bit", "1e3", "0x10", "012", ".5", "-1", "+1", "2024-01-01", "1_000"] },
  { name: "indicators", value: ["- a", "? b", ": c", "a: b", "a #b", "#c", "&x", "*y", "!t", "|", ">", "%d", "@e", "`f", "'g'", '"h"', "{i}", "[j]", ",k"] },
  { name: "whitespace and control characters", value: [" lead", "trail ", "two\nlines", "tab\there", "\u0000nul", "del\u007f", "c1\u0085\u0090", "\u2028\u2029", "\ufeffbom"] },
  { name: "unicode", value: "llama-3 – “quoted” 量子化 🦙" },
  { name: "numbers and booleans", value: 4.3125 },
  { name: "false", value: false },
];

for (const c of yamlCases) {
  test(`front matter round-trips through a YAML parser (1.1 and 1.2): ${c.name}`, () => {
    const text = emitFrontMatter([["value", c.value]]);
    for (const version of ["1.1", "1.2"] as const) assert.equal((yamlParse(frontMatterBlock(text)!, { version }) as { value: unknown }).value, c.value);
  });
}

test("readFrontMatterScalars reads top-level scalars only", () => {
  const readme = `---\nlicense: other # custom\nlicense_name: "llama3.1"\nlicense_link: 'https://x.y/it''s'\ntags:\n  - license: no\nextra: [a, b]\n---\nlicense: body\n`;
  assert.equal(Object.fromEntries(readFrontMatterScalars(readme)), { license: "other", license_name: "llama3.1", license_link: "https://x.y/it's" });
  assert.equal(readFrontMatterScalars("no front matter\n").size, 0);
});

test.run();
