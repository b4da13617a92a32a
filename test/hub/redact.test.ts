import { inspect } from "node:util";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { publishError, redactSecret } from "../../converters/hub-publish/redact.js";
import { retryingFetch } from "../../converters/hub-publish/retry-fetch.js";
import { FormatError } from "../../formats/errors.js";

/**
 * What `lmpack publish` does to its own errors and requests, without a server: which requests are
 * retried (and which never are, because they may have been applied), and what is cut from every
 * message before it is shown: the token in every form, and presigned URLs' query strings.
 */
const test = suite("hub publish: retries and redaction");

const retryCases: { name: string; method: string; path: string; answers: (number | "reset")[]; calls: number; result: number | "throws" }[] = [
  { name: "a storage PUT cut off is sent again", method: "PUT", path: "/upload/a/b/oid", answers: ["reset", 200], calls: 2, result: 200 },
  { name: "an LFS batch answered 502 is asked again", method: "POST", path: "/a/b.git/info/lfs/objects/batch", answers: [502, 503, 200], calls: 3, result: 200 },
  { name: "a commit answered 500 is not repeated (it may have been applied)", method: "POST", path: "/api/models/a/b/commit/main", answers: [500, 200], calls: 1, result: 500 },
  { name: "a commit answered 503 is repeated (not processed)", method: "POST", path: "/api/models/a/b/commit/main", answers: [503, 200], calls: 2, result: 200 },
  { name: "a commit whose connection dropped is not repeated", method: "POST", path: "/api/models/a/b/commit/main", answers: ["reset", 200], calls: 1, result: "throws" },
  { name: "retries run out", method: "GET", path: "/api/models/a/b/tree/main", answers: [502, 502, 502, 502], calls: 3, result: 502 },
  { name: "a 404 is an answer, not a failure", method: "GET", path: "/api/models/a/b/revision/x", answers: [404, 200], calls: 1, result: 404 },
];

for (const c of retryCases) {
  test(`retrying fetch: ${c.name}`, async () => {
    let calls = 0;
    const base = (async () => {
      const answer = c.answers[calls++]!;
      if (answer === "reset") throw new TypeError("fetch failed", { cause: { code: "ECONNRESET" } });
      return new Response(null, { status: answer });
    }) as typeof fetch;
    const fetchWithRetries = retryingFetch({ retries: 2, baseDelayMs: 1, maxDelayMs: 2 }, base);
    const outcome = await fetchWithRetries(`http://127.0.0.1${c.path}`, { method: c.method }).then((r) => r.status, () => "throws" as const);
    assert.is(outcome, c.result);
    assert.is(calls, c.calls);
  });
}

test("redactSecret removes the raw, URL-encoded and userinfo forms", () => {
  const secret = "hf_a/b+c";
  assert.is(redactSecret(`Bearer ${secret} ${encodeURIComponent(secret)} https://u:${secret}@host/x`, secret), "Bearer hf_*** hf_*** https://***@host/x");
});

const urlCases: { name: string; text: string; redacted: string }[] = [
  {
    name: "a presigned S3 URL in @huggingface/hub's trailer",
    text: "Api error with status 403. URL: https://bucket.s3.amazonaws.com/repos/ab/cd?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAXYZ%2F20250101&X-Amz-Signature=0badf00d. Request ID: r1",
    redacted: "Api error with status 403. URL: https://bucket.s3.amazonaws.com/repos/ab/cd?*** Request ID: r1",
  },
  { name: "any query, userinfo too", text: "GET http://user:pw@cdn.example/x/y.bin?Expires=1&Signature=s&Key-Pair-Id=k failed", redacted: "GET http://***@cdn.example/x/y.bin?*** failed" },
  { name: "a fragment-free URL keeps its path", text: "https://huggingface.co/api/models/a/b/commit/main", redacted: "https://huggingface.co/api/models/a/b/commit/main" },
  { name: "a URL-encoded URL nested in another's text", text: "redirect=https%3A%2F%2Fs3%2Fk%3FX-Amz-Signature%3D0badf00d%26X-Amz-Credential%3DAKIAXYZ", redacted: "redirect=https%3A%2F%2Fs3%2Fk%3FX-Amz-Signature%3D***%26X-Amz-Credential%3D***" },
];

for (const c of urlCases) {
  test(`redactSecret cuts URL query strings: ${c.name}`, () => {
    assert.is(redactSecret(c.text, undefined), c.redacted);
  });
}

test("publishError redacts every context field of lmpack's errors, keeping class and code", () => {
  const secret = "hf_secret_token";
  const signed = "https://s3.example/k?X-Amz-Signature=0badf00d";
  const original = new FormatError("TENSOR_MISSING", `not in ${signed} (${secret})`, { file: signed, tensor: `t.${secret}`, byteOffset: 8, expected: { urls: [signed] }, actual: secret, cause: new Error(secret) });
  const rebuilt = publishError(original, "me/x@main", secret) as FormatError;
  assert.ok(rebuilt instanceof FormatError);
  assert.is(rebuilt.code, "TENSOR_MISSING");
  assert.is(rebuilt.byteOffset, 8);
  assert.equal(rebuilt.expected, { urls: ["https://s3.example/k?***"] });
  assert.is(rebuilt.actual, "hf_***");
  assert.is(rebuilt.tensor, "t.hf_***");
  const text = [rebuilt.message, rebuilt.detail, rebuilt.file, JSON.stringify(rebuilt.toJSON()), inspect(rebuilt, { depth: 8, showHidden: true })].join("\n");
  for (const leak of [secret, "0badf00d"]) assert.not.ok(text.includes(leak), `${leak} in the rebuilt error`);
});

test.run();
