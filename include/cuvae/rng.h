/* Random numbers. Noise is cuRAND's Philox4_32_10 generator's: on the CPU its host generator's numbers, computed by
 * src/core/philox.c (its host library is one to two orders of magnitude slower); the CUDA backend uses the device
 * generator with the same seed and offsets, through the host API, which generates on the GPU. Both draw the identical raw integers and uniforms; the normals are Box-Muller of the same integer pairs
 * through the device's __sincosf/logf instead of the host's sinf/cosf/logf, so they may differ by up to 2.0e-6 s
 * (s = sqrt(-2 ln u) <= 6.8: <= 1.4e-5; derivation in tests/emu/curand_bound.h, consequences for CPU/CUDA parity in
 * docs/ARCHITECTURE.md, "Random numbers").
 * The scheme (also in docs/ARCHITECTURE.md, "Random numbers"):
 *   training eps, step t (0-based, counted across epochs): seed = cfg seed, n = B*Z normals drawn at
 *     offset t * cuvae_noise_stride(B*Z)  [stride = B*Z rounded up to a multiple of 4, one Philox block];
 *   evaluation eps, batch k of a pass:  seed = cfg seed ^ CUVAE_SEED_EVAL, offset k * stride(Be*Z);
 *   initial weights:                      seed = cfg seed ^ CUVAE_SEED_INIT, offset 0, tensor by tensor in
 *                                         layout order, each at the next multiple-of-4 offset;
 *   data noise of training step t ([data] binarize = dynamic, dequantize = uniform, corrupt): seed = cfg seed ^
 *     CUVAE_SEED_DATA, with n = B*D: binarization or dequantization uniforms at offset 2t * stride(n) (one slot for
 *     both: binarization is Bernoulli-only, dequantization Gaussian-only, so a config never has both), corruption
 *     draws (normals for gaussian:STD, uniforms for mask:P) at offset (2t + 1) * stride(n);
 *   data drawn once at load (binarize = static, the test set of binarize = dynamic, the test set and any other
 *     evaluated set of dequantize = uniform): seed = cfg seed ^ CUVAE_SEED_STATIC ^ split (0 train, 1 test),
 *     uniforms of the whole split from offset 0 in row order;
 *   training eps with samples L > 1: n = L*B*Z normals at offset t * stride(L*B*Z), sample-major ([L][B][Z]);
 *   epoch shuffle: Fisher-Yates driven by splitmix64 of (seed, epoch, i) (cuvae_shuffle), host only.
 * Data parallel (src/backend/data_parallel.h): each draw above is the global batch's; a rank takes the values of its
 * rows from it (cuvae_noise_*_slice: for eps, sample s of the rank's rows [r0, r0 + b) is the slice
 * [(s B + r0) Z, (s B + r0 + b) Z) of the step's draw), so the noise of an example depends on (seed, step, its
 * position in the global batch) and never on the rank count. */
#ifndef CUVAE_RNG_H
#define CUVAE_RNG_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

#define CUVAE_SEED_EVAL UINT64_C(0x5EEDE7A15EEDE7A1)
#define CUVAE_SEED_INIT UINT64_C(0x1A17A15E1A17A15E)
#define CUVAE_SEED_DATA UINT64_C(0xDA7AD07ADA7AD07A)
#define CUVAE_SEED_STATIC UINT64_C(0x57A71CB157A71CB0)

typedef struct cuvae_noise cuvae_noise;

cuvae_noise *cuvae_noise_create(uint64_t seed);   /* NULL + cuvae_last_error() on failure */
void cuvae_noise_destroy(cuvae_noise *g);
/* n standard normals starting at `offset` in the stream (offset must be a multiple of 4). */
int cuvae_noise_normal(cuvae_noise *g, uint64_t offset, float *out, size_t n);
/* n uniforms in (0, 1] starting at `offset` (multiple of 4). */
int cuvae_noise_uniform(cuvae_noise *g, uint64_t offset, float *out, size_t n);
/* Values [skip, skip + n) of the draw that starts at `offset` (a multiple of 4): the same numbers as that part of
 * one draw of skip + n values there (a Philox block is 4 values, normals pair values 2k and 2k + 1, so the draw
 * starts at the block holding value `skip`). */
int cuvae_noise_normal_slice(cuvae_noise *g, uint64_t offset, uint64_t skip, float *out, size_t n);
int cuvae_noise_uniform_slice(cuvae_noise *g, uint64_t offset, uint64_t skip, float *out, size_t n);
/* n rounded up to a multiple of 4: the stream positions one draw of n values occupies. */
static inline uint64_t cuvae_noise_stride(size_t n) { return ((uint64_t)n + 3u) & ~(uint64_t)3u; }

uint64_t cuvae_splitmix64(uint64_t x);
/* perm[0..n) = the shuffled order of epoch `epoch` for `seed` (a permutation of 0..n-1). */
void cuvae_shuffle(uint32_t *perm, size_t n, uint64_t seed, int64_t epoch);

#ifdef __cplusplus
}
#endif
#endif
