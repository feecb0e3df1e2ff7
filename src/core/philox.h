/* Philox4x32-10 uniforms computed on the host, the numbers cuRAND's PHILOX4_32_10 generator draws (host and device
 * API), without its host library (which takes ~80 ns a value). Private to src/core (used by rng.c). */
#ifndef CUVAE_PHILOX_H
#define CUVAE_PHILOX_H
#include <stddef.h>
#include <stdint.h>

/* out[0..n) = uniforms [offset, offset + n) of the stream of `seed` (offset a multiple of 4), in (0, 1]. */
void cuvae_philox_uniform(uint64_t seed, uint64_t offset, float *out, size_t n);

#endif
