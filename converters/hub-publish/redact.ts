import { ConversionError, FormatError, IoError, KernelError, UsageError, VerificationError, type ErrorContext, type LmpackError } from "../../formats/errors.js";

/**
 * Keeping secrets out of everything lmpack prints or writes. Two kinds of secret pass through a
 * publish:
 * - the access token, which only ever travels in `Authorization` headers to the Hub endpoint,
 *   but leaks when a server echoes it in an error body, a URL carries it, or an error object's
 *   message or cause holds it;
 * - presigned storage URLs (the LFS batch answer's upload hrefs: S3's X-Amz-Credential and
 *   X-Amz-Signature, or a CDN's signed query), which authorise a write to the repo's storage for
 *   as long as they live. @huggingface/hub appends the failing request's whole URL to every
 *   HubApiError message ("… URL: https://…?X-Amz-Signature=…"), so a refused upload would print
 *   one. Every URL query string is cut, not only the parameters we know: storage providers
 *   name their signatures differently, and no query string is needed to diagnose an error.
 */

export const REDACTED = "hf_***";

/** A URL with its query (everything from `?` to the next white space) replaced by `?***`. */
const URL_QUERY = /(https?:\/\/[^\s?#]+)\?\S*/gi;
/**
 * Signature parameters outside a URL the rule above sees: a URL-encoded URL nested in another
 * (`%3FX-Amz-Signature%3D…%26X-Amz-Credential%3D…`), or a query quoted without its URL. A name
 * counts after a separator or an encoded `?`/`&`, not inside a longer name (`mysig=`).
 */
const SIGNATURE_PARAMETER = /(?<=^|[^a-z0-9_-]|%3F|%26)(x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential|signature|sig)(=|%3D)(?:(?!%26)[^&\s"'<])+/gi;
/** The userinfo of a URL (`scheme://user:password@host`). */
const URL_USERINFO = /(\b[a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/gi;

/** `text` with every URL's query string, userinfo and signature parameters cut. */
export function redactUrls(text: string): string {
  return text.replace(URL_QUERY, "$1?***").replace(SIGNATURE_PARAMETER, "$1$2***").replace(URL_USERINFO, "$1***@");
}

/** `text` with every occurrence of `secret` (raw or URL-encoded) replaced, and URLs redacted (redactUrls). */
export function redactSecret(text: string, secret: string | undefined): string {
  let out = text;
  if (secret !== undefined && secret !== "") for (const form of new Set([secret, encodeURIComponent(secret)])) out = out.split(form).join(REDACTED);
  return redactUrls(out);
}

/** What @huggingface/hub throws for a non-2xx answer (HubApiError), read structurally. */
interface HubApiErrorLike {
  statusCode: number;
  url?: string;
  message: string;
}

function isHubApiError(error: unknown): error is HubApiErrorLike {
  return error instanceof Error && typeof (error as Partial<HubApiErrorLike>).statusCode === "number";
}

export function hubStatusOf(error: unknown): number | undefined {
  return isHubApiError(error) ? error.statusCode : undefined;
}

type LmpackErrorClass = new (code: never, detail: string, context?: ErrorContext) => LmpackError;
/** lmpack's error classes, rebuilt with their code and a redacted detail and context. */
const LMPACK_ERROR_CLASSES: readonly LmpackErrorClass[] = [IoError, FormatError, UsageError, VerificationError, ConversionError, KernelError];

/**
 * Any error of a publish, as a typed lmpack error whose message and context hold no secret.
 * Errors from @huggingface/hub or fetch are rebuilt without their `cause` and without their own
 * fields (`url`, `data`: the Hub error's URL is the presigned one, and a cause is printed whole
 * with LMPACK_DEBUG=1); lmpack's own errors are rebuilt with the detail and every context field
 * redacted, keeping class and code, and dropping the cause for the same reason. A refusal by
 * storage (a URL off `endpoint`) is told apart from one by the Hub: the token is not its cause.
 */
export function publishError(error: unknown, label: string, token: string | undefined, endpoint?: string): Error {
  const clean = (text: string) => redactSecret(text, token);
  const lmpackClass = LMPACK_ERROR_CLASSES.find((c) => error instanceof c);
  if (lmpackClass !== undefined) {
    const known = error as LmpackError;
    return new lmpackClass(known.code as never, clean(known.detail), contextOf(known, clean));
  }
  const message = clean(error instanceof Error ? error.message : String(error));
  const file = clean(label);
  if (isHubApiError(error)) {
    const status = error.statusCode;
    if ((status === 401 || status === 403) && isStorageUrl(error.url, endpoint)) {
      return new IoError("HUB_AUTH", `the LFS storage refused the upload (${status}): ${message}; its presigned URL may have expired: run the same command again to resume`, { file });
    }
    if (status === 401 || status === 403) return new IoError("HUB_AUTH", `the Hub refused the request (${status}): ${message}; HF_TOKEN must be a token with write access to this repo`, { file });
    if (status === 404) return new IoError("HUB_NOT_FOUND", `not found on the Hub (404): ${message}`, { file });
    return new IoError("NETWORK", `unexpected answer from the Hub (${status}): ${message}`, { file });
  }
  if ((error as Error | undefined)?.name === "AbortError") return new IoError("NETWORK", `the upload was aborted: ${message}`, { file });
  return new IoError("NETWORK", `cannot complete the upload (${message}); run the same command again to resume: objects the Hub already holds are not sent again`, { file });
}

/** A URL off the Hub endpoint: an LFS batch's presigned storage URL (S3, a CDN), which HF_TOKEN does not authorise. */
function isStorageUrl(url: string | undefined, endpoint: string | undefined): boolean {
  if (url === undefined || endpoint === undefined) return false;
  try {
    return new URL(url).origin !== new URL(endpoint).origin;
  } catch {
    return false;
  }
}

function contextOf(error: LmpackError, clean: (text: string) => string): ErrorContext {
  return {
    file: error.file === undefined ? undefined : clean(error.file),
    tensor: error.tensor === undefined ? undefined : clean(error.tensor),
    byteOffset: error.byteOffset,
    expected: redactValue(error.expected, clean),
    actual: redactValue(error.actual, clean),
  };
}

/** Nesting deeper than this in an error's expected/actual is replaced, not walked: context values are small. */
const MAX_REDACT_DEPTH = 8;

/** `value` with every string in it (nested in arrays and plain objects too) passed through `clean`. */
export function redactValue(value: unknown, clean: (text: string) => string, depth = 0): unknown {
  if (typeof value === "string") return clean(value);
  if (value === null || typeof value !== "object") return value;
  if (depth >= MAX_REDACT_DEPTH) return "[nested too deep: not shown]";
  if (Array.isArray(value)) return value.map((item) => redactValue(item, clean, depth + 1));
  if (value instanceof Error) return clean(value.message);
  if (ArrayBuffer.isView(value)) return value;
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [clean(key), redactValue(item, clean, depth + 1)]));
}

/**
 * `publishError` for code that is not the upload (reading facts for the card): lmpack's errors
 * keep their class and code, anything else stays an internal error (a bug), message redacted.
 */
export function redactError(error: unknown, token: string | undefined): unknown {
  if (LMPACK_ERROR_CLASSES.some((c) => error instanceof c)) return publishError(error, "", token);
  if (error instanceof Error) return new Error(redactSecret(error.message, token));
  return new Error(redactSecret(String(error), token));
}
