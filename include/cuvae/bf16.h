/* bfloat16 numbers as uint16_t bits (docs/MATH.md (8.1)): round-to-nearest-even from float, exact back to float.
 * The one definition of the rounding the CPU backend, its CUDA twins' tests and the CUDA emulation compare against. */
#ifndef CUVAE_BF16_H
#define CUVAE_BF16_H
#include <stdint.h>
#include <string.h>

/* float -> bf16, round to nearest, ties to even; NaN -> a quiet NaN of the same sign; +-Inf stay. */
static inline uint16_t cuvae_bf16_from_float(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* bf16 -> float (exact). */
static inline float cuvae_bf16_to_float(uint16_t h) {
  const uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

#endif
