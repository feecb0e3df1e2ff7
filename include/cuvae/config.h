/* The run configuration: INI sections [data] [model] [train]. The schema (keys, types, ranges, defaults, help)
 * lives in exactly one place, the key table in src/core/config.c; this struct is its in-memory form. */
#ifndef CUVAE_CONFIG_H
#define CUVAE_CONFIG_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#ifdef __cplusplus
extern "C" {
#endif

#define CUVAE_MAX_HIDDEN 8
#define CUVAE_PATH_MAX 1024

typedef enum { CUVAE_ACT_RELU = 0, CUVAE_ACT_TANH = 1, CUVAE_ACT_NONE = 2 } cuvae_activation;
typedef enum { CUVAE_LIK_BERNOULLI = 0, CUVAE_LIK_GAUSSIAN = 1 } cuvae_likelihood;
/* torch: W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch nn.Linear's default (He-uniform with a = sqrt 5);
 * he: He-normal (ReLU) / Xavier-uniform (tanh, heads, output) weights, zero biases. */
typedef enum { CUVAE_INIT_TORCH = 0, CUVAE_INIT_HE = 1 } cuvae_init;
/* GEMM precision (docs/MATH.md section 8): fp32; TF32 tensor-core math on the CUDA backend (inputs rounded to 10
 * mantissa bits; the CPU has no TF32 and computes fp32); bf16: the GEMMs' operands (weights, the activations and
 * gradients that feed a GEMM) rounded to bfloat16, fp32 accumulation, everything else fp32 (fp32 master weights and
 * Adam state, losses, the fused kernels). */
typedef enum { CUVAE_PRECISION_FP32 = 0, CUVAE_PRECISION_TF32 = 1, CUVAE_PRECISION_BF16 = 2 } cuvae_precision;
/* The model family (docs/MATH.md sections 4-6). Gaussian decoder variance: fixed sigma, one learned
 * log-variance shared by every pixel (tensor dec.logvar), or a second decoder head of per-pixel log-variances. */
typedef enum { CUVAE_VAR_FIXED = 0, CUVAE_VAR_LEARNED_SHARED = 1, CUVAE_VAR_LEARNED_PER_DIM = 2 } cuvae_variance;
/* Decoder: mirror of the encoder's hidden layers (mlp), or one affine map z -> output (linear). */
typedef enum { CUVAE_DECODER_MLP = 0, CUVAE_DECODER_LINEAR = 1 } cuvae_decoder;
/* Training objective: (multi-sample) ELBO, importance-weighted bound (IWAE), or a plain autoencoder. */
typedef enum { CUVAE_OBJ_ELBO = 0, CUVAE_OBJ_IWAE = 1, CUVAE_OBJ_AE = 2 } cuvae_objective;
/* The ELBO's KL term: closed form (docs/MATH.md section 3), or log q(z|x) - log p(z) at the drawn samples. */
typedef enum { CUVAE_KL_ANALYTIC = 0, CUVAE_KL_SAMPLED = 1 } cuvae_kl_estimator;
/* Bernoulli data: as given, re-drawn x ~ Bernoulli(x) every step (test set: drawn once), or drawn once. */
typedef enum { CUVAE_BINARIZE_NONE = 0, CUVAE_BINARIZE_DYNAMIC = 1, CUVAE_BINARIZE_STATIC = 2 } cuvae_binarize;
/* Denoising autoencoder input corruption: none, x + std * N(0, 1), or each input zeroed with probability p. */
typedef enum { CUVAE_CORRUPT_NONE = 0, CUVAE_CORRUPT_GAUSSIAN = 1, CUVAE_CORRUPT_MASK = 2 } cuvae_corrupt_kind;
/* 8-bit data under a Gaussian decoder: as given, or y = (k + u) / 256, u ~ U(0, 1), k = 255 x (docs/MATH.md (4.6)). */
typedef enum { CUVAE_DEQUANTIZE_NONE = 0, CUVAE_DEQUANTIZE_UNIFORM = 1 } cuvae_dequantize;
/* Learning-rate schedule after the warm-up (docs/MATH.md (7.3)): constant, cosine decay to lr_min, step decay. */
typedef enum { CUVAE_LR_CONSTANT = 0, CUVAE_LR_COSINE = 1, CUVAE_LR_STEP = 2 } cuvae_lr_schedule;
typedef struct cuvae_corrupt {
  cuvae_corrupt_kind kind;
  float level;                          /* gaussian: std (> 0); mask: p in (0, 1); none: 0 */
} cuvae_corrupt;

typedef struct cuvae_config {
  /* [data] */
  char dataset[64];                     /* "fashion-mnist", or "" when explicit paths are given */
  char train_images[CUVAE_PATH_MAX];    /* IDX (plain or .gz) or .npy; resolved from dataset when set */
  char train_labels[CUVAE_PATH_MAX];    /* optional ("" = none) */
  char test_images[CUVAE_PATH_MAX];
  char test_labels[CUVAE_PATH_MAX];
  cuvae_binarize binarize;              /* Bernoulli data: none | dynamic | static */
  cuvae_corrupt corrupt;                /* encoder-input corruption (denoising autoencoder) */
  int validation;                       /* examples held out of the end of the training set for validation */
  cuvae_dequantize dequantize;          /* Gaussian decoder on 8-bit data: none | uniform */
  /* [model] */
  int n_hidden;                         /* number of hidden layers in the encoder (decoder mirrors it) */
  int hidden[CUVAE_MAX_HIDDEN];         /* widths, input side first */
  int latent;                           /* Z */
  cuvae_likelihood likelihood;
  float sigma;                          /* Gaussian decoder's fixed standard deviation (initial one when learned) */
  cuvae_variance gaussian_variance;     /* fixed | learned_shared | learned_per_dim */
  float min_variance;                   /* learned variances: floor of the decoder variance; 0 = off */
  cuvae_decoder decoder;                /* mlp | linear */
  int conditional;                      /* 1: labels one-hot appended to encoder and decoder inputs (CVAE) */
  int classes;                          /* number of label classes C of the conditional VAE */
  cuvae_activation activation;          /* hidden-layer activation: relu | tanh */
  cuvae_init init;                      /* initial weights: torch | he */
  /* [train] */
  int epochs;
  int batch_size;
  float lr;
  float beta1, beta2, adam_eps;
  float clip_norm;                      /* global gradient-norm clip; 0 = off */
  cuvae_lr_schedule lr_schedule;        /* constant | cosine | step, after lr_warmup_steps */
  int64_t lr_warmup_steps;              /* lr rises linearly over this many steps; 0 = off */
  float lr_min;                         /* cosine: the rate at the end of the decay */
  int64_t lr_decay_steps;               /* cosine: steps from the start to lr_min (0 = the whole run); step: the
                                           interval between decays */
  float lr_gamma;                       /* step: the factor of each decay */
  float ema;                            /* decay of the exponential moving average of the weights; 0 = off */
  float skip_grad_norm;                 /* skip an update whose gradient norm is above this; 0 = off */
  float skip_zscore;                    /* skip one whose norm is this many standard deviations above the mean of
                                           the last skip_window applied ones; 0 = off */
  int skip_window;                      /* norms in the z-score window */
  int skip_nonfinite;                   /* skip a non-finite step instead of stopping (on whenever skipping is) */
  int skip_limit;                       /* stop after this many skipped steps in a row */
  int early_stop;                       /* stop after this many epochs without a better validation NELBO; 0 = off */
  uint64_t seed;
  int64_t max_steps;                    /* 0 = no limit */
  int eval_batch_size;
  int log_every;                        /* steps between plain log lines / progress refreshes */
  int threads;                          /* 0 = all cores */
  cuvae_precision precision;            /* GEMMs: fp32 | tf32 | bf16 */
  int cuda_graph;                       /* CUDA backend: 1 = replay each step as a captured graph, 0 = eager */
  int shard_optimizer;                  /* several ranks: 1 = ZeRO-1 (each rank's shard of Adam's state) */
  cuvae_objective objective;            /* elbo | iwae | ae */
  int samples;                          /* samples of z per example: L (elbo) or K (iwae); 1 for ae */
  cuvae_kl_estimator kl;                /* elbo: analytic | sampled */
  float beta;                           /* weight of the KL term (beta-VAE) */
  int64_t beta_warmup_steps;            /* beta rises linearly from 0 over this many steps; 0 = off */
  float free_bits;                      /* nats per latent dim: KL term beta sum_j max(free_bits, KL_j); 0 = off */
} cuvae_config;

void cuvae_config_defaults(cuvae_config *c);
/* Reads an INI file over c. Unknown sections/keys and bad values fail with "FILE:LINE: [section] key: problem". */
int cuvae_config_load_file(cuvae_config *c, const char *path);
/* Same, from text in memory; `name` is used in messages (e.g. the checkpoint path). */
int cuvae_config_load_string(cuvae_config *c, const char *text, const char *name);
/* One override "section.key=value" (as given to --set). */
int cuvae_config_set(cuvae_config *c, const char *assignment);
/* Cross-key checks (e.g. dataset or all paths given) and filling the paths of a named dataset. */
int cuvae_config_finalize(cuvae_config *c);
/* The effective config as INI text, loadable by cuvae_config_load_string. Caller frees. */
char *cuvae_config_to_ini(const cuvae_config *c);
/* Prints the schema (every key, type, default, help) for `cuvae help config`. */
void cuvae_config_print_schema(FILE *out);
/* 0 when the two configs describe the same architecture (input handled separately); otherwise -1 with a
 * message naming the first differing key. */
int cuvae_config_same_architecture(const cuvae_config *a, const cuvae_config *b);

const char *cuvae_activation_name(cuvae_activation a);
const char *cuvae_likelihood_name(cuvae_likelihood l);
const char *cuvae_init_name(cuvae_init i);
const char *cuvae_objective_name(cuvae_objective o);
const char *cuvae_precision_name(cuvae_precision p);
/* *out = the cuvae_precision named fp32 | tf32 | bf16; -1 with a message for any other name. */
int cuvae_precision_parse(const char *name, int *out);

#ifdef __cplusplus
}
#endif
#endif
