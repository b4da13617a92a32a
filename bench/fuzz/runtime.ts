import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * How to start Node so that Jazzer.js's native fuzzer loads. Its prebuilt addon
 * (@jazzer.js/fuzzer, linux-x64 and linux-arm64) needs glibc ≥ 2.38 and GLIBCXX_3.4.32; Debian 12
 * (this machine and CI) has glibc 2.36. There, Debian 13 (trixie)'s libc6, libstdc++6 and
 * libgcc-s1 are downloaded (never installed: `apt-get download`, signatures checked by apt
 * against the system's Debian keyring) and unpacked into RUNTIME_DIR, and Node runs under
 * trixie's dynamic loader with that library path. Nothing outside RUNTIME_DIR changes. Where
 * the system glibc is new enough, Node runs as it is.
 */

/** Where the trixie libraries are unpacked, relative to the repository root (git-ignored). */
export const RUNTIME_DIR = ".fuzz-runtime";
/** The oldest glibc the prebuilt fuzzer addon links against. */
export const MIN_GLIBC: readonly [number, number] = [2, 38];
const TRIXIE_PACKAGES = ["libc6", "libstdc++6", "libgcc-s1"];
const DEBIAN_MIRROR = "http://deb.debian.org/debian";

/** Command prefix that runs a Node script: [executable, ...arguments before the script]. */
export interface NodeLauncher {
  command: string;
  args: string[];
  /** How the launcher was chosen, for the log. */
  describe: string;
}

/** The system glibc version, or undefined off glibc (musl, macOS): there the prebuilt addon decides. */
export function glibcVersion(): [number, number] | undefined {
  const header = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header;
  const match = /^(\d+)\.(\d+)/.exec(header?.glibcVersionRuntime ?? "");
  return match === null ? undefined : [Number(match[1]), Number(match[2])];
}

function olderThan(version: readonly [number, number], min: readonly [number, number]): boolean {
  return version[0] < min[0] || (version[0] === min[0] && version[1] < min[1]);
}

/** A launcher for `node`, provisioning trixie's runtime under `root/RUNTIME_DIR` when the system glibc is too old. */
export function nodeLauncher(root: string, nodeFlags: string[]): NodeLauncher {
  const version = glibcVersion();
  if (version === undefined || !olderThan(version, MIN_GLIBC)) {
    return { command: process.execPath, args: nodeFlags, describe: `node ${process.version} (system glibc ${version?.join(".") ?? "n/a"})` };
  }
  const { loader, libDir } = provisionTrixie(join(root, RUNTIME_DIR));
  return { command: loader, args: ["--library-path", libDir, process.execPath, ...nodeFlags], describe: `node ${process.version} under Debian trixie's glibc (${libDir}), system glibc ${version.join(".")}` };
}

interface TrixieRuntime {
  loader: string;
  libDir: string;
}

function provisionTrixie(dir: string): TrixieRuntime {
  const arch = debianArch();
  const triplet = arch === "arm64" ? "aarch64-linux-gnu" : "x86_64-linux-gnu";
  const loaderName = arch === "arm64" ? "ld-linux-aarch64.so.1" : "ld-linux-x86-64.so.2";
  const libDir = join(dir, "root", "usr", "lib", triplet);
  const runtime = { loader: join(libDir, loaderName), libDir };
  if (existsSync(join(dir, "complete")) && existsSync(runtime.loader)) return runtime;

  rmSync(dir, { recursive: true, force: true });
  for (const sub of ["lists/partial", "cache/archives/partial", "debs", "root"]) mkdirSync(join(dir, sub), { recursive: true });
  writeFileSync(join(dir, "trixie.list"), `deb ${DEBIAN_MIRROR} trixie main\n`);
  // A private apt state: the system's sources, lists and dpkg status are neither read nor changed.
  const options = [
    `Dir::Etc::sourcelist=${join(dir, "trixie.list")}`, "Dir::Etc::sourceparts=-", `Dir::State::Lists=${join(dir, "lists")}`,
    `Dir::Cache=${join(dir, "cache")}`, "Dir::State::status=/dev/null", `APT::Architecture=${arch}`,
  ].flatMap((o) => ["-o", o]);
  run("apt-get", [...options, "-qq", "update"], dir);
  run("apt-get", [...options, "-qq", "download", ...TRIXIE_PACKAGES], join(dir, "debs"));
  for (const deb of readdirSync(join(dir, "debs")).filter((f) => f.endsWith(".deb"))) run("dpkg", ["-x", join(dir, "debs", deb), join(dir, "root")], dir);
  if (!existsSync(runtime.loader)) throw new Error(`trixie runtime: ${runtime.loader} missing after unpacking ${TRIXIE_PACKAGES.join(", ")}`);
  writeFileSync(join(dir, "complete"), `${TRIXIE_PACKAGES.join(" ")} from ${DEBIAN_MIRROR} trixie\n`);
  return runtime;
}

function debianArch(): string {
  const result = spawnSync("dpkg", ["--print-architecture"], { encoding: "utf8" });
  if (result.status === 0) return result.stdout.trim();
  return process.arch === "arm64" ? "arm64" : "amd64";
}

function run(command: string, args: string[], cwd: string): void {
  const result = spawnSync(command, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  if (result.status !== 0) {
    throw new Error(`trixie runtime: ${command} ${args.slice(-3).join(" ")} failed (${result.error?.message ?? `exit ${result.status}`}):\n${result.stderr}`);
  }
}
