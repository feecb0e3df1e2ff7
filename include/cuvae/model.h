/* The VAE's shapes and its ONE parameter buffer: the layout table (name, shape, offset) is defined here and
 * built in src/core/model.c; gradients and Adam moments use the same layout. Weights are stored like PyTorch's
 * nn.Linear: W[out][in] row-major, then b[out].
 *
 * Encoder: D -> hidden[0] -> ... -> hidden[k-1] -> (mu, lv), each of size Z.
 * Decoder: Z -> hidden[k-1] -> ... -> hidden[0] -> D outputs (Bernoulli logits, or Gaussian means).
 * The two encoder heads are stored as enc.mu.weight, enc.lv.weight, enc.mu.bias, enc.lv.bias, so that they
 * form one contiguous [2Z, hidden[k-1]] weight and one [2Z] bias: one GEMM produces a row [mu | lv].
 *
 * The model family (config keys in include/cuvae/config.h):
 * - decoder = linear: the decoder is the output layer alone (Z -> D); the encoder keeps its hidden layers.
 * - conditional: the encoder's first layer reads [x | onehot(y)] (D + C inputs), the decoder's first layer
 *   [z | onehot(y)] (Z + C inputs).
 * - gaussian_variance = learned_per_dim: the output layer has two heads stored like the encoder's, dec.out.weight,
 *   dec.lv.weight, dec.out.bias, dec.lv.bias: one [2D, H] layer whose output row is [mean | log-variance].
 * - gaussian_variance = learned_shared: one more tensor after all the others, dec.logvar [1], the log-variance
 *   shared by every output feature (initially 2 log sigma, as is the per-dim head's bias).
 *
 * Each layer's weight block (both heads' weights, for a two-head layer) and bias block start at a multiple of
 * CUVAE_TENSOR_ALIGN floats; the second head of a two-head layer follows the first without a gap. */
#ifndef CUVAE_MODEL_H
#define CUVAE_MODEL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cuvae/config.h"
#ifdef __cplusplus
extern "C" {
#endif

#define CUVAE_MAX_LAYERS (CUVAE_MAX_HIDDEN + 1)
#define CUVAE_MAX_TENSORS (4 * CUVAE_MAX_LAYERS + 6)
#define CUVAE_TENSOR_NAME 32
/* Every layer's weight block and bias block, and the buffer's length, are multiples of this many floats (256
 * bytes): each GEMM operand starts at a 256-byte boundary of a buffer that starts at one (cudaMalloc's guarantee;
 * the CPU backend allocates likewise). The gaps between blocks are zero and stay zero (their gradient is zero). */
#define CUVAE_TENSOR_ALIGN ((size_t)64)
/* Refuse models with more parameters than this (2^31 floats = 8 GiB) before allocating. */
#define CUVAE_MAX_PARAMS ((size_t)1 << 31)

typedef struct cuvae_tensor {
  char name[CUVAE_TENSOR_NAME]; /* e.g. "enc.0.weight" */
  int rank;                     /* 1 or 2 */
  size_t shape[2];              /* rank 2: [out, in]; rank 1: [out, 1] */
  size_t offset;                /* in floats, into the parameter buffer */
  size_t count;
} cuvae_tensor;

typedef struct cuvae_layer {
  size_t in, out;
  size_t w, b;                  /* offsets of W[out][in] and b[out] */
  cuvae_activation act;         /* applied after the affine map; NONE for heads */
} cuvae_layer;

typedef struct cuvae_model {
  size_t input_dim;             /* D */
  size_t latent;                /* Z */
  cuvae_likelihood likelihood;
  float sigma;
  cuvae_variance variance;      /* fixed | learned_shared | learned_per_dim */
  size_t logvar;                /* learned_shared: offset of dec.logvar; else 0 (unused) */
  float logvar_min;             /* learned variances: floor of the log-variance, ln [model] min_variance (docs/MATH.md
                                   (4.8)); -INFINITY: none */
  double nll_offset;            /* added to every row's -log p(x|z): D ln 256 for dequantized data (docs/MATH.md
                                   (4.6)), so the NLL bounds the discrete data's; else 0 */
  size_t cond;                  /* C, the one-hot label width appended to both inputs; 0 when not conditional */
  cuvae_activation activation;
  cuvae_init init;
  int n_enc;                    /* hidden layers + the (mu, lv) head (out = 2Z) */
  cuvae_layer enc[CUVAE_MAX_LAYERS];
  int n_dec;                    /* hidden layers + the output layer (out = D) */
  cuvae_layer dec[CUVAE_MAX_LAYERS];
  int n_tensors;
  cuvae_tensor tensors[CUVAE_MAX_TENSORS];
  size_t n_params;              /* the buffer's length in floats: the tensors and the alignment gaps */
  size_t n_values;              /* the parameters proper: the sum of the tensors' counts */
} cuvae_model;

/* Builds shapes and layout for input dimension D from the [model] section of cfg. */
int cuvae_model_build(cuvae_model *m, size_t input_dim, const cuvae_config *cfg);
/* Initial parameters by [model] init, and zeros in the gaps between tensors (see cuvae_init in config.h). Deterministic in seed (see
 * docs/ARCHITECTURE.md, "Random numbers"). */
int cuvae_model_init(const cuvae_model *m, float *params, uint64_t seed);
const cuvae_tensor *cuvae_model_find(const cuvae_model *m, const char *name);
/* The widest layer output, in floats per row: over the decoder's layers, and also the encoder's when
 * with_encoder. It sizes the buffers that hold one layer's activations or their gradient for a batch (the
 * backward pass's two ping-pong gradient buffers: both stacks; the IWAE evaluation's decoder activations: the
 * decoder). It is >= D, the decoder's last output, so a row of data fits too. */
size_t cuvae_model_widest_output(const cuvae_model *m, int with_encoder);
/* "[out, in]" or "[out]" into buf. */
void cuvae_tensor_shape_string(const cuvae_tensor *t, char *buf, size_t cap);
void cuvae_model_print_layout(const cuvae_model *m, FILE *out);
/* FLOPs of one training step (forward + backward of the dense layers) for a batch of B, for reporting. */
double cuvae_model_step_flops(const cuvae_model *m, int B);

#ifdef __cplusplus
}
#endif
#endif
