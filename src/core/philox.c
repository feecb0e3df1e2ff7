/* Philox4x32-10 uniforms on the host (see philox.h): the block function of Salmon et al. (2011) with cuRAND's
 * constants, the stream's layout as cuRAND's PHILOX4_32_10 generator orders it, and cuRAND's float conversion. */
#include "philox.h"

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

/* Value i of the stream: q = i / 4, element i mod 4 of the block Philox4x32-10(counter, key) with
 * counter = (c mod 2^32, c / 2^32, s, 0), c = q / 65536, s = q mod 65536, key = (seed mod 2^32, seed / 2^32).
 * One round: (x, y, z, w) -> (hi(M1 z) ^ y ^ k0, lo(M1 z), hi(M0 x) ^ w ^ k1, lo(M0 x)); the key grows by
 * (W0, W1) between rounds. uniform(v) = v 2^-32 + 2^-33 (exact in float: the product is a power-of-2 scaling). */
PHILOX_CLONES
static void uniform_blocks(uint64_t seed, uint64_t q0, size_t nb, float *out) {
  const float kInv = 2.3283064e-10f;  /* 2^-32, as cuRAND writes it: the float nearest, which is 2^-32 exactly */
  for (size_t b0 = 0; b0 < nb; b0 += LANES) {
    const size_t lanes = nb - b0 < LANES ? nb - b0 : LANES;
    uint32_t x[LANES], y[LANES], z[LANES], w[LANES];
    for (size_t l = 0; l < LANES; l++) {
      const uint64_t q = q0 + b0 + l, c = q / SUBSEQUENCES;
      x[l] = (uint32_t)c;
      y[l] = (uint32_t)(c >> 32);
      z[l] = (uint32_t)(q % SUBSEQUENCES);
      w[l] = 0;
    }
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
      for (size_t l = 0; l < LANES; l++) {
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
    for (size_t l = 0; l < lanes; l++) {
      float *o = out + 4 * (b0 + l);
      o[0] = (float)x[l] * kInv + kInv / 2.0f;
      o[1] = (float)y[l] * kInv + kInv / 2.0f;
      o[2] = (float)z[l] * kInv + kInv / 2.0f;
      o[3] = (float)w[l] * kInv + kInv / 2.0f;
    }
  }
}

/* Whole blocks in place; a last partial block through a small buffer. Large draws split across threads in chunks
 * (each value depends only on its index, so the split changes nothing). */
void cuvae_philox_uniform(uint64_t seed, uint64_t offset, float *out, size_t n) {
  const uint64_t q0 = offset / 4;
  const size_t full = n / 4;
  const long long chunks = (long long)((full + CHUNK_BLOCKS - 1) / CHUNK_BLOCKS);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (chunks > 1)
#endif
  for (long long c = 0; c < chunks; c++) {
    const size_t b = (size_t)c * CHUNK_BLOCKS, nb = full - b < CHUNK_BLOCKS ? full - b : CHUNK_BLOCKS;
    uniform_blocks(seed, q0 + b, nb, out + 4 * b);
  }
  if (n % 4) {
    float last[4];
    uniform_blocks(seed, q0 + full, 1, last);
    for (size_t i = 0; i < n % 4; i++) out[4 * full + i] = last[i];
  }
}
