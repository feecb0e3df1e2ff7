/* Noise streams (cuRAND's Philox4_32_10 numbers, computed by philox.c) and the epoch shuffle. Scheme:
 * include/cuvae/rng.h. */
#include "cuvae/rng.h"

#include <stdlib.h>
#include <string.h>

#include "cuvae/error.h"
#include "philox.h"

/* Philox is counter-based: value i of the stream depends only on the seed and i (normals: Box-Muller of the pair
 * 2k, 2k + 1), so any draw can start anywhere (at a multiple of 4: a block) and be split anywhere. The values are
 * cuRAND's PHILOX4_32_10 generator's, computed by src/core/philox.c (tests/test_rng.cc holds them to cuRAND's). */
struct cuvae_noise {
  uint64_t seed;
  float *slice;          /* for slices that do not start on a Philox block */
  size_t slice_len;
};

cuvae_noise *cuvae_noise_create(uint64_t seed) {
  cuvae_noise *g = calloc(1, sizeof *g);
  if (!g) {
    cuvae_error("out of memory creating the noise generator");
    return NULL;
  }
  g->seed = seed;
  return g;
}

void cuvae_noise_destroy(cuvae_noise *g) {
  if (!g) return;
  free(g->slice);
  free(g);
}

static int draw(cuvae_noise *g, uint64_t offset, float *out, size_t n, int normal) {
  if (n == 0) return 0;
  if (offset % 4) return cuvae_error("noise offset %llu is not a multiple of 4", (unsigned long long)offset);
  if (normal)
    cuvae_philox_normal(g->seed, offset, out, n);
  else
    cuvae_philox_uniform(g->seed, offset, out, n);
  return 0;
}

int cuvae_noise_normal(cuvae_noise *g, uint64_t offset, float *out, size_t n) { return draw(g, offset, out, n, 1); }

int cuvae_noise_uniform(cuvae_noise *g, uint64_t offset, float *out, size_t n) {
  return draw(g, offset, out, n, 0);
}

static int draw_slice(cuvae_noise *g, uint64_t offset, uint64_t skip, float *out, size_t n, int normal) {
  const size_t head = (size_t)(skip % 4);
  if (head == 0) return draw(g, offset + skip, out, n, normal);
  if (g->slice_len < n + head) {
    float *p = realloc(g->slice, (n + head) * sizeof *p);
    if (!p) return cuvae_error("out of memory drawing %zu random numbers", n);
    g->slice = p;
    g->slice_len = n + head;
  }
  if (draw(g, offset + skip - head, g->slice, n + head, normal)) return -1;
  memcpy(out, g->slice + head, n * sizeof *out);
  return 0;
}

int cuvae_noise_normal_slice(cuvae_noise *g, uint64_t offset, uint64_t skip, float *out, size_t n) {
  return draw_slice(g, offset, skip, out, n, 1);
}

int cuvae_noise_uniform_slice(cuvae_noise *g, uint64_t offset, uint64_t skip, float *out, size_t n) {
  return draw_slice(g, offset, skip, out, n, 0);
}

/* splitmix64 (Steele, Lea, Flood 2014): a bijective 64-bit mixer. */
uint64_t cuvae_splitmix64(uint64_t x) {
  x += UINT64_C(0x9E3779B97F4A7C15);
  x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
  return x ^ (x >> 31);
}

/* Fisher-Yates over the identity; swap partner j for position i is uniform in [0, i] by rejection sampling
 * on a 64-bit counter-based draw r = splitmix64(splitmix64(seed ^ epoch') ^ (i, attempt)). */
void cuvae_shuffle(uint32_t *perm, size_t n, uint64_t seed, int64_t epoch) {
  for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  const uint64_t key = cuvae_splitmix64(seed ^ cuvae_splitmix64((uint64_t)epoch + UINT64_C(0x243F6A8885A308D3)));
  for (size_t i = n; i-- > 1;) {
    const uint64_t range = (uint64_t)i + 1, limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t r, attempt = 0;
    do {
      r = cuvae_splitmix64(key ^ cuvae_splitmix64(((uint64_t)i << 8) ^ attempt++));
    } while (r >= limit);
    const size_t j = (size_t)(r % range);
    const uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}
