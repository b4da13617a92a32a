/**
 * fetch() for @huggingface/hub's upload calls, retrying transient failures so that one dropped
 * connection costs one request, not the whole publish: a storage PUT (one file, or one part of a
 * multipart upload) is sent again, and the files already stored are left alone.
 *
 * Transient: the connection failed (reset, closed mid-body, refused) or the server answered
 * 429, 500, 502, 503 or 504. Every upload request is idempotent (a PUT of content-addressed
 * bytes, a preupload or LFS batch query) except the commit POST: it is retried only when the
 * server cannot have applied it (429 or 503: not processed, or the connection was refused).
 * Request bodies are Blobs or strings, which can be sent again.
 */

export interface RetryPolicy {
  /** Attempts after the first (0: fail on the first transient error). */
  retries: number;
  /** Delay before the first retry; doubles with each one, up to `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Told about each retry (for a progress line); never given the request headers. */
  onRetry?: (info: { method: string; url: string; attempt: number; reason: string; delayMs: number }) => void;
}

export const DEFAULT_RETRIES = 4;
export const DEFAULT_RETRY_POLICY: RetryPolicy = { retries: DEFAULT_RETRIES, baseDelayMs: 500, maxDelayMs: 16_000 };
/** A Retry-After longer than this is not waited for: the error is reported and a rerun resumes. */
const MAX_RETRY_AFTER_MS = 60_000;
const TRANSIENT_STATUS = new Set([429, 500, 502, 503, 504]);
const NOT_APPLIED_STATUS = new Set([429, 503]);

export function retryingFetch(policy: RetryPolicy, base: typeof fetch = fetch): typeof fetch {
  return async (input, init) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    const method = (init?.method ?? "GET").toUpperCase();
    const isCommit = method === "POST" && /\/api\/[a-z]+s\/.+\/commit\//.test(new URL(url).pathname);
    for (let attempt = 0; ; attempt++) {
      let response: Response | undefined;
      let failure: unknown;
      try {
        response = await base(input, init);
      } catch (error) {
        failure = error;
      }
      if (init?.signal?.aborted) {
        if (failure !== undefined) throw failure;
        return response!;
      }
      const reason = response === undefined ? describe(failure) : `HTTP ${response.status}`;
      const transient = response === undefined ? !isCommit || connectionRefused(failure) : isCommit ? NOT_APPLIED_STATUS.has(response.status) : TRANSIENT_STATUS.has(response.status);
      if (!transient || attempt >= policy.retries) {
        if (response !== undefined) return response;
        throw failure;
      }
      const delayMs = retryDelayMs(policy, attempt, response);
      if (delayMs === undefined) return response!;
      await response?.body?.cancel().catch(() => undefined);
      policy.onRetry?.({ method, url, attempt: attempt + 1, reason, delayMs });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  };
}

function retryDelayMs(policy: RetryPolicy, attempt: number, response: Response | undefined): number | undefined {
  const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  const header = response?.headers.get("retry-after");
  if (header === null || header === undefined || !/^\d+$/.test(header.trim())) return backoff;
  const requestedMs = Number(header.trim()) * 1000;
  return requestedMs > MAX_RETRY_AFTER_MS ? undefined : Math.max(backoff, requestedMs);
}

/** undici wraps the socket error: TypeError("fetch failed", { cause: { code: "ECONNRESET" } }). */
function describe(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } } | undefined)?.cause;
  return cause?.code ?? cause?.message ?? (error instanceof Error ? error.message : String(error));
}

function connectionRefused(error: unknown): boolean {
  return (error as { cause?: { code?: string } } | undefined)?.cause?.code === "ECONNREFUSED";
}
