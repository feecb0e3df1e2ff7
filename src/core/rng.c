/* Noise streams (cuRAND Philox4_32_10, host generator) and the epoch shuffle. Scheme: include/cuvae/rng.h. */
#include "cuvae/rng.h"

#include <curand.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdlib.h>
#include <string.h>

#include "cuvae/error.h"
#include "philox.h"

/* Philox is counter-based: value i of the stream depends only on the seed and i (normals: Box-Muller of the pair
 * of integers 2k, 2k + 1), so a long draw is split at a multiple of 4 and its two parts drawn by two generators of
 * the same seed on two threads, giving the same numbers as one generator (test Rng.SplitDrawsEqualOneDraw). */
enum { NOISE_PARTS = 2, NOISE_SPLIT_MIN = 1 << 16 };  /* draws shorter than NOISE_SPLIT_MIN stay on one thread */
/* Placing cuRAND's host generator at an offset costs about 14 ms (measured with cuRAND 10 / CUDA 13, about what
 * drawing 2M uniforms takes), so a draw up to NOISE_GAP_MAX values ahead of where the stream stands is reached by
 * drawing the gap as uniforms and dropping them (a rank's slices of consecutive steps, every N-th evaluation batch). */
enum { NOISE_GAP_MAX = 1 << 20 };

struct cuvae_noise {
  curandGenerator_t gen[NOISE_PARTS];
  float *scratch;        /* for draws whose length is not a multiple of 4 */
  size_t scratch_len;
  float *slice;          /* for slices that do not start on a Philox block */
  size_t slice_len;
  float *gap;            /* the values skipped on the way to a draw just ahead */
  size_t gap_len;
  uint64_t seed;          /* uniforms are computed here (philox.c), the same numbers without cuRAND's host library */
  uint64_t pos;          /* stream position after the last draw (of gen[0]) */
  int pos_known;
};

static int curand_check(curandStatus_t s, const char *what) {
  if (s == CURAND_STATUS_SUCCESS) return 0;
  return cuvae_error("cuRAND %s failed with status %d", what, (int)s);
}

cuvae_noise *cuvae_noise_create(uint64_t seed) {
  cuvae_noise *g = calloc(1, sizeof *g);
  if (!g) {
    cuvae_error("out of memory creating the noise generator");
    return NULL;
  }
  g->seed = seed;
  for (int k = 0; k < NOISE_PARTS; k++)
    if (curand_check(curandCreateGeneratorHost(&g->gen[k], CURAND_RNG_PSEUDO_PHILOX4_32_10),
                     "curandCreateGeneratorHost(PHILOX4_32_10)") ||
        curand_check(curandSetGeneratorOrdering(g->gen[k], CURAND_ORDERING_PSEUDO_DEFAULT), "set ordering") ||
        curand_check(curandSetPseudoRandomGeneratorSeed(g->gen[k], seed), "set seed")) {
      cuvae_noise_destroy(g);
      return NULL;
    }
  return g;
}

void cuvae_noise_destroy(cuvae_noise *g) {
  if (!g) return;
  for (int k = 0; k < NOISE_PARTS; k++)
    if (g->gen[k]) curandDestroyGenerator(g->gen[k]);
  free(g->scratch);
  free(g->slice);
  free(g->gap);
  free(g);
}

static float *scratch_for(cuvae_noise *g, size_t n) {
  if (g->scratch_len < n) {
    float *p = realloc(g->scratch, n * sizeof *p);
    if (!p) return NULL;
    g->scratch = p;
    g->scratch_len = n;
  }
  return g->scratch;
}

/* Draws stride(n) values (a whole number of Philox blocks) at `offset` and keeps the first n. Setting the
 * host generator's offset costs ~12 ms (measured with cuRAND 10 / CUDA 13), so it is set only when the
 * requested offset is not where the previous draw left the stream: consecutive training steps never set it.
 * Draws of multiples of 4 advance the stream by exactly their length (checked: sequential draws equal one
 * long draw equal offset draws). */
/* len values (a multiple of 4) at offset with generator k; the generator is left after them. */
static curandStatus_t draw_part(curandGenerator_t gen, uint64_t offset, int set_offset, float *dst, size_t len,
                                int normal) {
  if (len == 0) return CURAND_STATUS_SUCCESS;
  if (set_offset) {
    const curandStatus_t s = curandSetGeneratorOffset(gen, offset);
    if (s != CURAND_STATUS_SUCCESS) return s;
  }
  return normal ? curandGenerateNormal(gen, dst, len, 0.0f, 1.0f) : curandGenerateUniform(gen, dst, len);
}

/* The values from gen[0]'s position to `offset` (0 when the generator must be placed: its position is unknown, behind,
 * or more than NOISE_GAP_MAX away). A multiple of 4: both are. */
static size_t gap_ahead(const cuvae_noise *g, uint64_t offset) {
  return g->pos_known && offset > g->pos && offset - g->pos <= NOISE_GAP_MAX ? (size_t)(offset - g->pos) : 0;
}

static float *gap_for(cuvae_noise *g, size_t n) {
  if (g->gap_len < n) {
    float *p = realloc(g->gap, n * sizeof *p);
    if (!p) return NULL;
    g->gap = p;
    g->gap_len = n;
  }
  return g->gap;
}

/* A draw of len values (a multiple of 4) just ahead of gen[0]: each cuRAND host call costs about 0.5 ms whatever its
 * length, so a short draw after a short gap takes the gap and the values in one call and keeps the values; otherwise
 * the gap is skipped as uniforms first (a uniform and a normal each take one 32-bit value of the stream, so either way the values are
 * those at `offset`). 1 when done here, 0 when the caller draws (no gap), -1 on failure. */
static int draw_ahead(cuvae_noise *g, uint64_t offset, float *dst, size_t len, int normal) {
  const size_t gap = gap_ahead(g, offset);
  if (gap == 0) return 0;
  const int short_draw = len < NOISE_SPLIT_MIN && gap < NOISE_SPLIT_MIN;
  float *buf = gap_for(g, short_draw ? gap + len : gap);
  if (!buf) return 0;  /* then the generator is placed instead */
  if (!short_draw) {
    if (curand_check(curandGenerateUniform(g->gen[0], buf, gap), "uniform draw")) return -1;
    g->pos = offset;
    return 0;
  }
  const curandStatus_t st = normal ? curandGenerateNormal(g->gen[0], buf, gap + len, 0.0f, 1.0f)
                                   : curandGenerateUniform(g->gen[0], buf, gap + len);
  if (curand_check(st, normal ? "normal draw" : "uniform draw")) return -1;
  memcpy(dst, buf + gap, len * sizeof *dst);
  g->pos = offset + len;
  return 1;
}

static int draw(cuvae_noise *g, uint64_t offset, float *out, size_t n, int normal) {
  if (n == 0) return 0;
  if (offset % 4) return cuvae_error("noise offset %llu is not a multiple of 4", (unsigned long long)offset);
  if (!normal) {  /* cuRAND's uniforms, computed here (philox.c): ~50x faster than its host generator */
    cuvae_philox_uniform(g->seed, offset, out, n);
    return 0;
  }
  const size_t len = (size_t)cuvae_noise_stride(n);
  float *dst = out;
  if (len != n) {
    dst = scratch_for(g, len);
    if (!dst) return cuvae_error("out of memory drawing %zu random numbers", n);
  }
  const int ahead = draw_ahead(g, offset, dst, len, normal);
  if (ahead < 0) return -1;
  if (ahead == 0) {
    /* gen[0] draws [0, head), gen[1] the rest; gen[0] keeps its position between draws, gen[1] is always placed. */
    const size_t head = len < NOISE_SPLIT_MIN ? len : len / 2 / 4 * 4;
    const int place0 = !g->pos_known || g->pos != offset;
    curandStatus_t s[NOISE_PARTS] = {CURAND_STATUS_SUCCESS, CURAND_STATUS_SUCCESS};
#ifdef _OPENMP
#pragma omp parallel for num_threads(NOISE_PARTS) schedule(static, 1) if (head < len)
#endif
    for (int k = 0; k < NOISE_PARTS; k++)
      s[k] = k == 0 ? draw_part(g->gen[0], offset, place0, dst, head, normal)
                    : draw_part(g->gen[1], offset + head, 1, dst + head, len - head, normal);
    g->pos_known = 0;
    for (int k = 0; k < NOISE_PARTS; k++)
      if (curand_check(s[k], normal ? "normal draw" : "uniform draw")) return -1;
    g->pos = offset + head;  /* where gen[0] stands */
    g->pos_known = 1;
  }
  if (dst != out) memcpy(out, dst, n * sizeof *out);
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
