#!/usr/bin/env node
// Installs the outside runtimes that judge lmpack's exports into .runtimes/ (git-ignored), once:
//  - node-llama-cpp with only its prebuilt linux-x64 binary (85 MB instead of 725 MB with the CUDA
//    and Vulkan builds; ../shared/ref/gguf-onnx.md §2.2);
//  - onnxruntime-node, whose tarball bundles the CPU execution provider. Its postinstall would
//    fetch CUDA binaries from NuGet and fails offline, so it runs with ONNXRUNTIME_NODE_INSTALL=skip
//    (gguf-onnx.md §3.6).
// They are kept out of package.json because `npm ci --omit=optional` would also drop TypeScript's
// native binary. All are installed in one npm call: --no-save leaves no manifest in .runtimes/,
// so a later call for one package alone would prune the others as extraneous. Needs the npm
// registry the first time; afterwards it is a no-op. Run by `npm test` (pretest) and `npm run runtimes`.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const prefix = join(root, ".runtimes");
const PACKAGES = { "node-llama-cpp": "3.22.1", "@node-llama-cpp/linux-x64": "3.22.1", "onnxruntime-node": "1.30.0" };
const ORT_BINDING_DIR = join(prefix, "node_modules", "onnxruntime-node", "bin", "napi-v6", "linux", "x64");
const ORT_BINDING_FILES = ["onnxruntime_binding.node", "libonnxruntime.so.1"];
// A one-node ONNX model, Y = Identity(X) with X float [1] (ir_version 10, opset 21), written by
// converters/onnx/model.ts. Creating a session from it proves the CPU binding loads and runs offline.
const IDENTITY_MODEL_HEX = "080a3a3e0a100a015812015922084964656e7469747912086964656e746974795a0f0a0158120a0a08080112040a020801620f0a0159120a0a08080112040a02080142040a001015";

const installed = (name, version) => {
  const manifest = join(prefix, "node_modules", name, "package.json");
  return existsSync(manifest) && JSON.parse(readFileSync(manifest, "utf8")).version === version;
};
const linuxX64 = process.platform === "linux" && process.arch === "x64";
const missing = Object.entries(PACKAGES).filter(([name, version]) => !installed(name, version));
if (missing.length > 0 && linuxX64) {
  console.error(`installing ${missing.map(([n, v]) => `${n}@${v}`).join(", ")} into .runtimes/`);
  execFileSync("npm", ["install", "--no-save", "--no-package-lock", "--omit=optional", "--no-audit", "--no-fund", "--prefix", prefix, ...Object.entries(PACKAGES).map(([n, v]) => `${n}@${v}`)], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: "skip" },
  });
  checkOnnxRuntime();
}

/** Fails the install when the bundled CPU binding is absent or cannot run a model offline. */
function checkOnnxRuntime() {
  const absent = ORT_BINDING_FILES.filter((f) => !existsSync(join(ORT_BINDING_DIR, f)));
  if (absent.length > 0) throw new Error(`onnxruntime-node: CPU binding files missing in ${ORT_BINDING_DIR}: ${absent.join(", ")}`);
  const probe = `
    const ort = require(${JSON.stringify(join(prefix, "node_modules", "onnxruntime-node"))});
    (async () => {
      const session = await ort.InferenceSession.create(Buffer.from(${JSON.stringify(IDENTITY_MODEL_HEX)}, "hex"));
      const out = await session.run({ X: new ort.Tensor("float32", Float32Array.of(1.5), [1]) });
      if (out.Y.data[0] !== 1.5) throw new Error("Identity returned " + out.Y.data[0]);
    })().catch((e) => { console.error(e); process.exit(1); });`;
  execFileSync(process.execPath, ["-e", probe], { stdio: ["ignore", "ignore", "inherit"] });
}
