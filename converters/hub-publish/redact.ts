import { FormatError, IoError, UsageError, VerificationError } from "../../formats/errors.js";

/**
 * Keeping the access token out of everything lmpack prints or writes. The token only ever
 * travels in `Authorization` headers to the Hub endpoint; these helpers cover the other ways a
 * secret leaks: a server that echoes it in an error body, a URL that carries it, an error object
 * whose message or cause holds it.
 */

export const REDACTED = "hf_***";

/** `text` with every occurrence of `secret` (raw, URL-encoded or in a URL's userinfo) replaced. */
export function redactSecret(text: string, secret: string | undefined): string {
  let out = text;
  if (secret !== undefined && secret !== "") for (const form of new Set([secret, encodeURIComponent(secret)])) out = out.split(form).join(REDACTED);
  return out.replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/gi, "$1***@");
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

/**
 * Any error of a publish, as a typed lmpack error whose message holds no secret. Errors from
 * @huggingface/hub or fetch are rebuilt without their `cause` (a cause is printed whole with
 * LMPACK_DEBUG=1, and it may hold an echoed token); lmpack's own errors are rebuilt with the
 * message redacted, keeping code and context.
 */
export function publishError(error: unknown, label: string, token: string | undefined): Error {
  const clean = (text: string) => redactSecret(text, token);
  if (error instanceof IoError) return new IoError(error.code, clean(error.detail), contextOf(error, clean));
  if (error instanceof FormatError) return new FormatError(error.code, clean(error.detail), contextOf(error, clean));
  if (error instanceof UsageError) return new UsageError(error.code, clean(error.detail), contextOf(error, clean));
  if (error instanceof VerificationError) return new VerificationError(error.code, clean(error.detail), contextOf(error, clean));
  const message = clean(error instanceof Error ? error.message : String(error));
  if (isHubApiError(error)) {
    const status = error.statusCode;
    if (status === 401 || status === 403) return new IoError("HUB_AUTH", `the Hub refused the request (${status}): ${message}; HF_TOKEN must be a token with write access to this repo`, { file: label });
    if (status === 404) return new IoError("HUB_NOT_FOUND", `not found on the Hub (404): ${message}`, { file: label });
    return new IoError("NETWORK", `unexpected answer from the Hub (${status}): ${message}`, { file: label });
  }
  if ((error as Error | undefined)?.name === "AbortError") return new IoError("NETWORK", `the upload was aborted: ${message}`, { file: label });
  return new IoError("NETWORK", `cannot complete the upload (${message}); run the same command again to resume: objects the Hub already holds are not sent again`, { file: label });
}

function contextOf(error: IoError | FormatError | UsageError | VerificationError, clean: (text: string) => string) {
  const file = error.file === undefined ? undefined : clean(error.file);
  return { file, tensor: error.tensor, byteOffset: error.byteOffset, expected: error.expected, actual: typeof error.actual === "string" ? clean(error.actual) : error.actual };
}

/**
 * `publishError` for code that is not the upload (reading facts for the card): lmpack's errors
 * keep their class and code, anything else stays an internal error (a bug), message redacted.
 */
export function redactError(error: unknown, token: string | undefined): unknown {
  if (error instanceof IoError || error instanceof FormatError || error instanceof UsageError || error instanceof VerificationError) return publishError(error, "", token);
  if (error instanceof Error) return new Error(redactSecret(error.message, token));
  return new Error(redactSecret(String(error), token));
}
