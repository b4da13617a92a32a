/**
 * What a libFuzzer run (under Jazzer.js) printed, reduced to the figures the table reports.
 * Sources, in order of preference: the final statistics (-print_final_stats=1), the "Done N runs
 * in T second(s)" line, the last status line ("#N  pulse  cov: C ft: F corp: U/Sb exec/s: E ...").
 */
export interface FuzzRunStats {
  executions: number;
  /** Exec/s as libFuzzer measured it (fuzzing time only), when it printed one. */
  execPerSecond: number | undefined;
  /** Coverage counters (edges) reached, from the last status line. */
  coverage: number | undefined;
  /** Inputs in the in-memory corpus at the end. */
  corpusUnits: number | undefined;
}

export function parseFuzzLog(log: string): FuzzRunStats {
  const finalExecs = /stat::number_of_executed_units:\s*(\d+)/.exec(log)?.[1];
  const finalRate = /stat::average_exec_per_sec:\s*(\d+)/.exec(log)?.[1];
  const done = /Done (\d+) runs in (\d+) second/.exec(log);
  const status = [...log.matchAll(/^#(\d+)\s+\w+\s+cov: (\d+) ft: \d+ corp: (\d+)\/\S+(?: lim: \d+)? exec\/s: (\d+)/gm)].at(-1);
  const executions = Number(finalExecs ?? done?.[1] ?? status?.[1] ?? 0);
  const doneRate = done !== null && Number(done[2]) > 0 ? Math.round(Number(done[1]) / Number(done[2])) : undefined;
  return {
    executions,
    execPerSecond: finalRate !== undefined ? Number(finalRate) : doneRate ?? (status === undefined ? undefined : Number(status[4])),
    coverage: status === undefined ? undefined : Number(status[2]),
    corpusUnits: status === undefined ? undefined : Number(status[3]),
  };
}

/** The lines that say what went wrong (Jazzer.js's finding report and libFuzzer's crash lines). */
export function findingExcerpt(log: string, maxLines = 30): string {
  const lines = log.split("\n");
  const start = lines.findIndex((l) => /^==\d+== |Uncaught Exception|ERROR: libFuzzer|AllocationFinding|FuzzerSignalFinding/.test(l));
  return (start < 0 ? lines.slice(-maxLines) : lines.slice(start, start + maxLines)).join("\n");
}
