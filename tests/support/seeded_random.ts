/**
 * A small deterministic pseudo-random generator for fuzz tests and
 * benchmarks, so that a failure can be replayed from its seed.
 *
 * @module
 */

/**
 * Returns a generator of numbers in [0, 1) determined by `seed` (mulberry32).
 *
 * @param seed Any 32-bit integer.
 * @returns The generator.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
