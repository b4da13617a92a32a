import type { ProgressSink } from "../converters/tensor-stream.js";
import { formatBytes } from "../converters/io/byte-size.js";

/** Redraws at most this often: terminal writes are slow and a 10 GB copy calls advance() ~600 times. */
const REDRAW_MS = 100;

/** A one-line progress bar on stderr, drawn only when stderr is a terminal. */
export function terminalProgress(enabled = process.stderr.isTTY === true): ProgressSink | undefined {
  if (!enabled) return undefined;
  let total = 0;
  let done = 0;
  let started = 0;
  let lastDraw = 0;
  const draw = (label: string) => {
    const now = Date.now();
    if (now - lastDraw < REDRAW_MS && done < total) return;
    lastDraw = now;
    const width = 30;
    const fraction = total === 0 ? 1 : Math.min(1, done / total);
    const filled = Math.round(fraction * width);
    const seconds = Math.max((now - started) / 1000, 1e-3);
    const rate = `${formatBytes(done / seconds)}/s`;
    const columns = process.stderr.columns ?? 100;
    const line = `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${formatBytes(done)}/${formatBytes(total)} ${rate} ${label}`;
    process.stderr.write(`\r${line.slice(0, columns - 1).padEnd(columns - 1)}`);
  };
  return {
    start(totalBytes) {
      total += totalBytes;
      started ||= Date.now();
    },
    advance(bytes, label) {
      done += bytes;
      draw(label);
    },
    finish() {
      process.stderr.write("\r\x1b[K");
    },
  };
}
