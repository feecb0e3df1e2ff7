/* The optimizer's per-step rules that both backends share: the learning rate of a step (docs/MATH.md (7.3)) and the
 * verdict on a step's update: apply it, skip it, or stop (docs/MATH.md (7.4)). The verdict is one inline function
 * compiled for the host (the CPU backend) and for the device (kernels/step_guard.cu), so both decide by one text. */
#ifndef CUVAE_OPTIMIZER_H
#define CUVAE_OPTIMIZER_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "cuvae/config.h"

#if defined(__CUDACC__)
#define CUVAE_HOST_DEVICE __host__ __device__
#else
#define CUVAE_HOST_DEVICE
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the learning rate --------------------------------------------------------------------------------------- */

/* The step (0-based) the cosine decay reaches lr_min at: [train] lr_decay_steps, or when 0 the run's last step,
 * epochs x (n_train / batch_size) - 1 (max_steps does not move it, so a run cut short and resumed keeps its
 * schedule). */
int64_t cuvae_lr_horizon(const cuvae_config *cfg, size_t n_train);
/* The rate of training step `step` (0-based), docs/MATH.md (7.3): warm-up lr (step + 1) / W for step < W; then
 * constant lr; cosine lr_min + (lr - lr_min) (1 + cos(pi p)) / 2 with p = (step - W) / (T - W) clamped to [0, 1],
 * T = horizon; step lr gamma^floor(step / lr_decay_steps). In double, rounded once to float. */
float cuvae_lr_at_step(const cuvae_config *cfg, int64_t horizon, int64_t step);

/* ---- skipping an update ------------------------------------------------------------------------------------ */

/* The rule, from [train] skip_*: `active` when any skipping is configured (a non-finite step is then skipped, not
 * fatal); above, zscore: the two thresholds (0 = off); window: W norms; limit: K skips in a row stop training. */
typedef struct cuvae_skip_rule {
  float above, zscore;
  int window, limit, active;
} cuvae_skip_rule;

/* What the rule remembers (saved in checkpoints): the steps skipped so far (Adam's step t counts applied updates:
 * t = steps taken - skipped), the skips in a row ending at the last step, and the window: the gradient norms of the
 * last `count` (<= W) applied updates in window[0..count), `pos` the slot the next one overwrites. */
typedef struct cuvae_skip_state {
  int64_t skipped, in_a_row, count, pos;
} cuvae_skip_state;

enum { CUVAE_SKIP_STATE_WORDS = 4 };  /* the int64s of cuvae_skip_state, in field order (device copies, checkpoint) */

typedef enum {
  CUVAE_STEP_APPLY = 0,      /* apply the update */
  CUVAE_STEP_SKIP = 1,       /* skip it: parameters, Adam's moments and t, the EMA stay */
  CUVAE_STEP_DIVERGED = 2,   /* not finite, skipping off: stop (the step is not applied) */
  CUVAE_STEP_SKIP_LIMIT = 3  /* skipped, and the limit of skips in a row is reached: stop */
} cuvae_step_verdict;

cuvae_skip_rule cuvae_skip_rule_from(const cuvae_config *cfg);

/* The verdict on a step with gradient norm `norm` (`finite`: its loss and gradient are finite), updating s and the
 * window (docs/MATH.md (7.4)). Skip when not finite, when norm > above, or when the window is full and
 * norm > mean + zscore * sd of the window's norms (mean and population sd in double, summed in slot order). An
 * applied step's norm enters the window. DIVERGED leaves s as it was. */
CUVAE_HOST_DEVICE static inline int cuvae_skip_verdict(const cuvae_skip_rule *r, cuvae_skip_state *s, float *window,
                                                       int finite, double norm) {
  int skip = 0;
  if (!finite) {
    if (!r->active) return CUVAE_STEP_DIVERGED;
    skip = 1;
  } else if (r->above > 0.0f && norm > (double)r->above) {
    skip = 1;
  } else if (r->zscore > 0.0f && s->count >= r->window) {
    double sum = 0.0, sq = 0.0;
    for (int64_t i = 0; i < s->count; i++) sum += (double)window[i];
    const double mean = sum / (double)s->count;
    for (int64_t i = 0; i < s->count; i++) {
      const double d = (double)window[i] - mean;
      sq += d * d;
    }
    skip = norm > mean + (double)r->zscore * sqrt(sq / (double)s->count);
  }
  if (skip) {
    s->skipped++;
    s->in_a_row++;
    return s->in_a_row >= r->limit ? CUVAE_STEP_SKIP_LIMIT : CUVAE_STEP_SKIP;
  }
  s->in_a_row = 0;
  if (r->window > 0) {
    window[s->pos] = (float)norm;
    s->pos = (s->pos + 1) % r->window;
    if (s->count < r->window) s->count++;
  }
  return CUVAE_STEP_APPLY;
}

/* One line for a stopping verdict of training step `step` (1-based), into msg. */
void cuvae_step_verdict_message(int verdict, const cuvae_skip_rule *r, int64_t step, double norm, double loss,
                                char *msg, size_t n);

#ifdef __cplusplus
}
#endif
#endif
