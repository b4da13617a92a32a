/**
 * The fuzz targets, one per parser of untrusted bytes. Each module (targets/<name>.ts, compiled to
 * dist/bench/fuzz/targets/<name>.js) exports `fuzz(data)`; `sync` targets return nothing and run
 * under Jazzer.js's --sync mode, the others return a promise. `instrument` lists the compiled
 * folders (under dist/) and packages (under node_modules/) whose code gives coverage feedback:
 * the parser itself and what it hands the bytes to.
 */
export interface FuzzTarget {
  name: string;
  sync: boolean;
  /**
   * "bytes": the seeds are inputs (libFuzzer starts from them). "edit-script": the seeds are the
   * base documents json-mutation.ts edits, and libFuzzer starts from an empty corpus.
   */
  input: "bytes" | "edit-script";
  instrument: string[];
  /** What the target reads, for the table. */
  reads: string;
}

/** lmpack's compiled code that every target may reach (readers, formats, generated protobuf code). */
const LMPACK_CODE = ["dist/converters/", "dist/formats/", "dist/schemas/gen/"];

export const FUZZ_TARGETS: readonly FuzzTarget[] = [
  { name: "safetensors", sync: false, input: "bytes", instrument: LMPACK_CODE, reads: "safetensors header and data; Hessian store metadata" },
  { name: "lmpack", sync: false, input: "bytes", instrument: [...LMPACK_CODE, "node_modules/protobufjs/"], reads: ".lmpack container: protobuf header, blobs, checksums, packed representations" },
  { name: "lmpack-notes", sync: true, input: "bytes", instrument: [...LMPACK_CODE, "node_modules/msgpackr/"], reads: "msgpack tensor notes" },
  { name: "gguf", sync: false, input: "bytes", instrument: LMPACK_CODE, reads: "GGUF header, KVs, tensor infos, ggml blocks" },
  { name: "onnx", sync: true, input: "bytes", instrument: [...LMPACK_CODE, "node_modules/protobufjs/"], reads: "ONNX ModelProto, MatMulNBits initializers" },
  { name: "hf-config", sync: true, input: "edit-script", instrument: LMPACK_CODE, reads: "config.json / quantize_config.json: GPTQ, AutoRound, AWQ, FP6, SpQR, VPTQ" },
  { name: "tokenizer", sync: true, input: "edit-script", instrument: [...LMPACK_CODE, "dist/model/", "node_modules/@huggingface/tokenizers/"], reads: "tokenizer.json and tokenizer_config.json" },
  { name: "quip-hessian", sync: false, input: "bytes", instrument: LMPACK_CODE, reads: "torch.save ZIP + restricted pickle (QuIP#/VPTQ Hessians)" },
];

export function fuzzTarget(name: string): FuzzTarget | undefined {
  return FUZZ_TARGETS.find((t) => t.name === name);
}
