/* The backend interface: one set of operations that the CPU reference and the CUDA backend both
 * implement. The trainer talks only to this interface. Every backend keeps the parameters, gradients and Adam
 * moments in the ONE layout of cuvae_model, so state moves between backends as three flat arrays. */
#ifndef CUVAE_BACKEND_H
#define CUVAE_BACKEND_H
#include <stddef.h>
#include <stdint.h>

#include "cuvae/config.h"
#include "cuvae/objective.h"
#include "cuvae/data.h"
#include "cuvae/model.h"
#include "cuvae/optimizer.h"
#include "data_parallel.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cuvae_backend cuvae_backend;

typedef struct cuvae_step_result {
  cuvae_loss loss;     /* of the batch, before the update */
  double grad_norm;    /* global L2 norm of the gradient, before clipping */
  float lr;            /* the learning rate of the step (docs/MATH.md (7.3)) */
  int skipped;         /* 1: the update was skipped (docs/MATH.md (7.4)): parameters, Adam's state and the EMA kept */
} cuvae_step_result;

/* The training state beyond the parameters and Adam's moments, saved in checkpoints: the EMA of the weights
 * ([train] ema > 0; n_params floats) and the skip rule's state with its window of norms ([train] skip_window floats
 * when skip_zscore > 0). A NULL array is not copied. */
typedef struct cuvae_extra_state {
  float *ema;
  cuvae_skip_state skip;
  float *window;
} cuvae_extra_state;

/* Training is enqueue + collect, so a device backend runs ahead of the host: train_step enqueues one step (the
 * CUDA backend returns before it has run), collect waits for every step enqueued since the last collect and hands
 * back their results in order. The CPU backend runs each step inside train_step; its collect only hands over. */
struct cuvae_backend {
  const char *name;    /* "cpu" | "cuda" */
  int max_pending;     /* at most this many train_step calls between two collects */
  char notice[256];    /* a line for the log from creation (e.g. "auto" fell back to the CPU); "" when none */
  char memory_plan[512]; /* what the backend holds, by category, one line (printed at the start of training) */
  char gemm[160];        /* what runs the dense layers' GEMMs, in which precision (printed at the start of training) */
  /* Data parallel (src/backend/data_parallel.h): NULL in one process. With it, train_step's rows are this rank's
   * slice of the global batch (B = the slice's rows, global batch B x dp->size), and the step's noise, gradient
   * scale, loss and gradient are those of the global batch; evaluate covers the set's batches round-robin over the
   * ranks and returns the whole set's mean on every rank. Set by cuvae_backend_join_data_parallel. */
  const cuvae_data_parallel *dp;
  /* Progress of a long call (iwae): called after each of its passes with the share of this rank's passes done, in
   * (0, 1]; NULL (the default): not called. The caller sets it around the call. */
  void (*progress)(void *ctx, double done);
  void *progress_ctx;
  /* Enqueues one Adam step on train rows rows[0..B) with the noise of training step `step` (0-based). Fails at
   * once on bad arguments (B, a row outside the training set, more than max_pending steps pending). */
  int (*train_step)(cuvae_backend *be, const uint32_t *rows, int B, int64_t step);
  /* Waits for the pending steps and writes their results to out[0..*n) (n <= max_pending), oldest first. When
   * a step's loss or gradient was not finite it fails with a message naming that step; the state is then the
   * state before that step (it and every later pending step were not applied), and nothing is pending. */
  int (*collect)(cuvae_backend *be, cuvae_step_result *out, int *n);
  /* Mean negative ELBO over all of ds, batches of `batch` rows, evaluation noise stream (a conditional model reads
   * ds->labels, as train_step reads the training set's). */
  int (*evaluate)(cuvae_backend *be, const cuvae_dataset *ds, int batch, cuvae_loss *out);
  /* Copy the state out / in (host arrays of n_params floats; m, v may be NULL on read of params only). */
  int (*get_state)(cuvae_backend *be, float *params, float *adam_m, float *adam_v);
  int (*set_state)(cuvae_backend *be, const float *params, const float *adam_m, const float *adam_v);
  /* Copy the extra state out / in (st->ema, st->window: host arrays, or NULL to leave that part). With no EMA kept
   * ([train] ema = 0) the ema array is not touched. Every rank calls them; no step may be pending. */
  int (*get_extra_state)(cuvae_backend *be, cuvae_extra_state *st);
  int (*set_extra_state)(cuvae_backend *be, const cuvae_extra_state *st);
  /* The gradient of the last collected step, before clipping (n_params floats, the model's layout). */
  int (*get_grad)(cuvae_backend *be, float *grad);
  /* Inference on n host rows (any n >= 1; the backend works through them in batches of its max batch):
   * encode: x[n][D] -> mulv[n][2Z] = (mu | lv) of q(z|x);
   * decode: z[n][Z] -> mean[n][D], the decoder's mean (sigmoid of the logits for Bernoulli, f for Gaussian).
   * labels[n]: each row's class for a conditional model (required there, in [0, classes)); NULL otherwise. */
  int (*encode)(cuvae_backend *be, const float *x, const int32_t *labels, size_t n, float *mulv);
  int (*decode)(cuvae_backend *be, const float *z, const int32_t *labels, size_t n, float *mean);
  /* Importance-weighted log p(x) estimate per row of ds (docs/MATH.md section 5) with K samples from q(z|x):
   * log_px[i] = logsumexp_k(log p(x_i | z_k) + log p(z_k) - log q(z_k | x_i)) - log K, from the evaluation noise
   * stream; rows processed `batch` at a time and the K samples in chunks, so K = 5000 fits in memory. Data
   * parallel: pass p of the plan is rank (p mod size)'s, and the ranks' rows are gathered (cuvae_iwae_gather), so
   * every rank returns every row with the bits of one process. */
  int (*iwae)(cuvae_backend *be, const cuvae_dataset *ds, int K, int batch, double *log_px);
  void (*destroy)(cuvae_backend *be);
  /* Makes be a rank of data-parallel training (cuvae_backend_join_data_parallel); NULL: setting be->dp suffices. */
  int (*join_data_parallel)(cuvae_backend *be, const cuvae_data_parallel *dp);
  /* One pass of the training step's GEMMs alone for B rows, as train_step runs them (the same library calls, plans,
   * epilogues, precision and operands; nothing else of the step), timed on the device: *seconds. For cuvae-bench's
   * GEMM share. Only with no step pending. The GEMMs write the step's activations and gradient buffers, so get_grad
   * no longer returns the last step's gradient; parameters, Adam state and the next step are untouched. NULL where
   * the benchmark replays the GEMMs itself (the CPU backend: bench/bench_dnnl.c, through the same calls). */
  int (*time_step_gemms)(cuvae_backend *be, int B, double *seconds);
};

/* Checks the labels a conditional model reads: present and in [0, classes) (what: for the message). 0 when the
 * model is not conditional. */
int cuvae_backend_check_labels(const cuvae_model *m, const int32_t *labels, size_t n, const char *what);
/* How many steps a backend lets pend between collects for this config (its log interval, bounded). */
int cuvae_backend_max_pending(const cuvae_config *cfg);
/* The rows every backend buffer holds: max(batch_size x samples, eval_batch_size); -1 with a message when that is
 * absurd (over 2^30 rows) or below 1. */
int cuvae_backend_max_batch(const cuvae_config *cfg);
/* The start of every backend's constructor: *max_batch (cuvae_backend_max_batch), then a zeroed object of `size`
 * bytes whose first member is its cuvae_backend, set to `ops` with the config's max_pending. NULL with a message. */
void *cuvae_backend_alloc(size_t size, const cuvae_backend *ops, const cuvae_config *cfg, int *max_batch);
/* An evaluation pass over n rows in batches of `batch` (both backends' evaluate): batch k covers rows
 * [k batch, min(n, (k + 1) batch)) and draws its noise at offset k * stride(batch Z), whatever its own length, so
 * the noise of a row does not depend on the backend; the result is the row-weighted mean of the batch means. */
typedef struct cuvae_eval_pass {
  size_t n, latent;
  int batch;
  double recon, kl;  /* sums over the rows so far */
  const cuvae_data_parallel *dp;  /* NULL, or: batch k is rank (k mod size)'s */
} cuvae_eval_pass;
typedef struct cuvae_eval_batch {
  size_t start;           /* first row */
  int B;                  /* rows */
  uint64_t noise_offset;  /* in the evaluation noise stream */
} cuvae_eval_batch;
/* 1 when share k of a pass (an evaluation batch, an IWAE pass, a chunk of encoded rows) is this rank's: share k is
 * rank (k mod size)'s. Always 1 in one process (dp NULL). */
int cuvae_dp_owns(const cuvae_data_parallel *dp, int64_t k);
/* After pass `pass` (0-based, this rank's) of a call over n rows in passes of `rows`: be->progress with the share of
 * this rank's passes done (cuvae_dp_owns decides which are its). */
void cuvae_backend_pass_done(const cuvae_backend *be, int64_t pass, size_t n, int rows);
/* IWAE on several ranks: log_px[0..n) holds this rank's rows and 0 in the others'; after the call every rank holds
 * every row. Each row has one non-zero term (its rank's), so the sum is that term, bit for bit. Nothing when dp is
 * NULL. A collective: every rank calls it. */
int cuvae_iwae_gather(const cuvae_data_parallel *dp, double *log_px, size_t n);
/* -1 with a message when batch < 1 or the set is empty. dp: the backend's (NULL in one process). */
int cuvae_eval_pass_begin(cuvae_eval_pass *p, size_t n, int batch, size_t latent, const cuvae_data_parallel *dp);
/* Batch k of the pass into *b; 0 when k is past the end. b->B = 0 when batch k is another rank's (skip it). */
int cuvae_eval_pass_batch(const cuvae_eval_pass *p, int64_t k, cuvae_eval_batch *b);
/* Adds batch b's means (recon and KL per row). */
void cuvae_eval_pass_add(cuvae_eval_pass *p, const cuvae_eval_batch *b, const cuvae_loss *batch_mean);
/* The pass's per-row means: recon, KL, their sum as nelbo and objective. Data parallel: the ranks' sums are added
 * first (in rank order; a collective call), so each batch's terms are those of one process and only the addition of
 * the ranks' double sums differs from it. */
int cuvae_eval_pass_end(cuvae_eval_pass *p, cuvae_loss *out);
/* One step, synchronously: train_step then collect (tests and tools that want each step's result at once). */
int cuvae_backend_step(cuvae_backend *be, const uint32_t *rows, int B, int64_t step, cuvae_step_result *out);

/* Makes be a rank of data-parallel training (before its first step; dp outlives it; collective: every rank calls
 * it). -1 with a message when the backend cannot (the CUDA backend of a build without NCCL). */
int cuvae_backend_join_data_parallel(cuvae_backend *be, const cuvae_data_parallel *dp);

/* device: "cpu", "cuda" or "auto" (cuda when a device is present, else the CPU with a notice). The backend
 * starts from freshly initialised parameters (cfg seed) and zero Adam moments. train: the training set (kept by
 * reference, or uploaded once); eval: the set evaluate() will be given most often (uploaded once by a device
 * backend; NULL when none); either may be NULL. */
cuvae_backend *cuvae_backend_create(const char *device, const cuvae_model *m, const cuvae_config *cfg,
                                    const cuvae_dataset *train, const cuvae_dataset *eval);
/* Number of usable CUDA devices (0 in builds without CUDA); desc receives a one-line description. */
int cuvae_cuda_device_count(char *desc, size_t n);
/* Makes `device` the current CUDA device (cudaSetDevice); -1 with a message when it cannot. */
int cuvae_cuda_set_device(int device);
cuvae_backend *cuvae_backend_cpu_create(const cuvae_model *m, const cuvae_config *cfg, const cuvae_dataset *train,
                                        const cuvae_dataset *eval);
/* The CUDA backend (src/backend/cuda/backend_cuda.c; only in builds with CUDA, or linked from the emulation's
 * cuvae_cuda_emu library in the tests). Uses the current device. Before allocating anything it checks its
 * memory plan against cudaMemGetInfo and fails with the plan in the message when the model does not fit. */
cuvae_backend *cuvae_backend_cuda_create(const cuvae_model *m, const cuvae_config *cfg, const cuvae_dataset *train,
                                         const cuvae_dataset *eval);

#ifdef __cplusplus
}
#endif
#endif
