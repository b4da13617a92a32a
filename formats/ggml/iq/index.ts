import type { GgmlTypeCodec } from "../types.js";
import { IQ1_M, IQ1_S } from "./iq1.js";
import { IQ2_S, IQ2_XS, IQ2_XXS } from "./iq2.js";
import { IQ3_S, IQ3_XXS } from "./iq3.js";

export { IQ1_M, IQ1_S, IQ2_S, IQ2_XS, IQ2_XXS, IQ3_S, IQ3_XXS };

/** The i-quant types (IQ1/IQ2/IQ3/...): dequantization only, in type-id order. */
export const IQ_TYPES: readonly GgmlTypeCodec[] = [IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ3_S, IQ2_S, IQ1_M];
