/**
 * Report failing Jupyter notebook cells on the Deno kernel, without collecting
 * anything private about the reader.
 *
 * @module
 */

export type * from "./src/types.ts";
