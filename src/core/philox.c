/* Philox4x32-10 noise on the host (see philox.h): the block function of Salmon et al. (2011) with cuRAND's
 * constants, the stream's layout as cuRAND's PHILOX4_32_10 generator orders it, and cuRAND's conversions to uniform
 * and normal floats. */
#define _GNU_SOURCE /* sincosf */
#include "philox.h"

#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PHILOX_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PHILOX_CLONES
#endif

enum {
  SUBSEQUENCES = 65536,  /* the generator's blocks go round-robin over 65536 subsequences (counter words 2-3) */
  LANES = 16,            /* blocks computed side by side (the loops over them vectorise) */
  CHUNK_BLOCKS = 4096    /* blocks per task when a draw is split across threads */
};

static const float kInv = 2.3283064e-10f;             /* 2^-32 as cuRAND writes it: the float nearest, 2^-32 exactly */
static const float kInv2Pi = 2.3283064e-10f * 6.2831855f;  /* cuRAND's 2^-32 2 pi, rounded to float */

/* The raw blocks q0 .. q0 + LANES - 1: value i of the stream is element i mod 4 of the block q = i / 4, computed from
 * counter (c mod 2^32, c / 2^32, s, 0) with c = q / 65536, s = q mod 65536, and key (seed mod 2^32, seed / 2^32).
 * One round: (x, y, z, w) -> (hi(M1 z) ^ y ^ k0, lo(M1 z), hi(M0 x) ^ w ^ k1, lo(M0 x)); the key grows by (W0, W1)
 * between rounds. */
PHILOX_CLONES
static void raw_blocks(uint64_t seed, uint64_t q0, uint32_t out[LANES][4]) {
  uint32_t x[LANES], y[LANES], z[LANES], w[LANES];
  for (int l = 0; l < LANES; l++) {
    const uint64_t q = q0 + (uint64_t)l, c = q / SUBSEQUENCES;
    x[l] = (uint32_t)c;
    y[l] = (uint32_t)(c >> 32);
    z[l] = (uint32_t)(q % SUBSEQUENCES);
    w[l] = 0;
  }
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    for (int l = 0; l < LANES; l++) {
      const uint64_t p0 = (uint64_t)0xD2511F53u * x[l], p1 = (uint64_t)0xCD9E8D57u * z[l];
      const uint32_t nx = (uint32_t)(p1 >> 32) ^ y[l] ^ k0, nz = (uint32_t)(p0 >> 32) ^ w[l] ^ k1;
      y[l] = (uint32_t)p1;
      w[l] = (uint32_t)p0;
      x[l] = nx;
      z[l] = nz;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int l = 0; l < LANES; l++) {
    out[l][0] = x[l];
    out[l][1] = y[l];
    out[l][2] = z[l];
    out[l][3] = w[l];
  }
}

/* cuRAND's uniform: v 2^-32 + 2^-33 (the product is a power-of-2 scaling: exact in float). */
static inline float uniform_of(uint32_t v) { return (float)v * kInv + kInv / 2.0f; }

/* cuRAND's Box-Muller of the pair (a, b): u = a 2^-32 + 2^-33, t = b (2^-32 2 pi) + (2^-32 2 pi) / 2, r =
 * sqrt(-2 ln u); (r sin t, r cos t). With glibc's logf and sincosf (correctly rounded but in rare cases) these are the
 * host generator's bits (Rng.NormalsAreCuRandsAtAnyOffset checks it). */
static inline void box_muller(uint32_t a, uint32_t b, float *n0, float *n1) {
  const float u = uniform_of(a), t = (float)b * kInv2Pi + kInv2Pi / 2.0f;
  const float r = sqrtf(-2.0f * logf(u));
  float s, c;
  sincosf(t, &s, &c);
  *n0 = s * r;
  *n1 = c * r;
}

/* nb blocks from q0 into out[4 nb], as uniforms or normals. */
static void fill_blocks(uint64_t seed, uint64_t q0, size_t nb, float *out, int normal) {
  uint32_t raw[LANES][4];
  for (size_t b0 = 0; b0 < nb; b0 += LANES) {
    raw_blocks(seed, q0 + b0, raw);
    const size_t lanes = nb - b0 < LANES ? nb - b0 : LANES;
    for (size_t l = 0; l < lanes; l++) {
      float *o = out + 4 * (b0 + l);
      if (normal) {
        box_muller(raw[l][0], raw[l][1], &o[0], &o[1]);
        box_muller(raw[l][2], raw[l][3], &o[2], &o[3]);
      } else {
        for (int e = 0; e < 4; e++) o[e] = uniform_of(raw[l][e]);
      }
    }
  }
}

/* Whole blocks in place; a last partial block through a small buffer. Large draws split across threads in chunks
 * (each value depends only on its index, so the split changes nothing). */
static void draw(uint64_t seed, uint64_t offset, float *out, size_t n, int normal) {
  const uint64_t q0 = offset / 4;
  const size_t full = n / 4;
  const long long chunks = (long long)((full + CHUNK_BLOCKS - 1) / CHUNK_BLOCKS);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (chunks > 1)
#endif
  for (long long c = 0; c < chunks; c++) {
    const size_t b = (size_t)c * CHUNK_BLOCKS, nb = full - b < CHUNK_BLOCKS ? full - b : CHUNK_BLOCKS;
    fill_blocks(seed, q0 + b, nb, out + 4 * b, normal);
  }
  if (n % 4) {
    float last[4];
    fill_blocks(seed, q0 + full, 1, last, normal);
    for (size_t i = 0; i < n % 4; i++) out[4 * full + i] = last[i];
  }
}

void cuvae_philox_uniform(uint64_t seed, uint64_t offset, float *out, size_t n) { draw(seed, offset, out, n, 0); }

void cuvae_philox_normal(uint64_t seed, uint64_t offset, float *out, size_t n) { draw(seed, offset, out, n, 1); }
