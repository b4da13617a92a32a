import { decodeNotes } from "../../../converters/lmpack/notes.js";
import { typedErrorsOnlySync } from "../harness.js";

/**
 * Per-tensor notes of .lmpack containers (msgpack through msgpackr), on their own: inside the
 * lmpack target they sit behind a protobuf header that mutations rarely keep intact.
 */
export function fuzz(data: Buffer): void {
  typedErrorsOnlySync(data, () => {
    decodeNotes(data, "fuzz.lmpack", "tensor");
  });
}
