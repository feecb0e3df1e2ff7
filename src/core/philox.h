/* Philox4x32-10 noise computed on the host: the numbers cuRAND's PHILOX4_32_10 host generator draws (its uniforms are
 * also the device generator's), without its host library (~80 ns a value, and milliseconds to place it at an
 * offset). Private to src/core (used by rng.c). */
#ifndef CUVAE_PHILOX_H
#define CUVAE_PHILOX_H
#include <stddef.h>
#include <stdint.h>

/* out[0..n) = uniforms [offset, offset + n) of the stream of `seed` (offset a multiple of 4), in (0, 1]. */
void cuvae_philox_uniform(uint64_t seed, uint64_t offset, float *out, size_t n);
/* out[0..n) = standard normals [offset, offset + n) (Box-Muller pairs 2k, 2k + 1 of the stream). */
void cuvae_philox_normal(uint64_t seed, uint64_t offset, float *out, size_t n);

#endif
