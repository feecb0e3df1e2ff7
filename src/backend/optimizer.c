/* The optimizer's rules both backends share (include/cuvae/optimizer.h): the learning-rate schedule and the skip
 * rule's configuration and messages. */
#include "cuvae/optimizer.h"

#include <stdio.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

int64_t cuvae_lr_horizon(const cuvae_config *cfg, size_t n_train) {
  if (cfg->lr_decay_steps > 0) return cfg->lr_decay_steps;
  const int64_t per_epoch = cfg->batch_size > 0 ? (int64_t)(n_train / (size_t)cfg->batch_size) : 0;
  const int64_t last = per_epoch * (int64_t)cfg->epochs - 1;  /* 0-based: the run's last step */
  return last > 0 ? last : 0;
}

/* docs/MATH.md (7.3). */
float cuvae_lr_at_step(const cuvae_config *cfg, int64_t horizon, int64_t step) {
  const double lr = cfg->lr;
  const int64_t w = cfg->lr_warmup_steps;
  if (w > 0 && step < w) return (float)(lr * (double)(step + 1) / (double)w);
  switch (cfg->lr_schedule) {
    case CUVAE_LR_COSINE: {
      double p = horizon > w ? (double)(step - w) / (double)(horizon - w) : 1.0;
      if (p > 1.0) p = 1.0;
      const double lo = cfg->lr_min;
      return (float)(lo + (lr - lo) * 0.5 * (1.0 + cos(M_PI * p)));
    }
    case CUVAE_LR_STEP:
      return (float)(lr * pow((double)cfg->lr_gamma, (double)(step / cfg->lr_decay_steps)));
    case CUVAE_LR_CONSTANT:
    default:
      return cfg->lr;
  }
}

cuvae_skip_rule cuvae_skip_rule_from(const cuvae_config *cfg) {
  cuvae_skip_rule r;
  r.above = cfg->skip_grad_norm;
  r.zscore = cfg->skip_zscore;
  r.window = cfg->skip_zscore > 0.0f ? cfg->skip_window : 0;
  r.limit = cfg->skip_limit > 0 ? cfg->skip_limit : 1;
  r.active = cfg->skip_nonfinite || cfg->skip_grad_norm > 0.0f || cfg->skip_zscore > 0.0f;
  return r;
}

void cuvae_step_verdict_message(int verdict, const cuvae_skip_rule *r, int64_t step, double norm, double loss,
                                char *msg, size_t n) {
  if (verdict == CUVAE_STEP_SKIP_LIMIT)
    snprintf(msg, n,
             "step %lld: %d updates in a row were skipped ([train] skip_limit; the last: gradient norm %g, loss %g); "
             "training stopped",
             (long long)step, r->limit, norm, loss);
  else if (!isfinite(loss))
    snprintf(msg, n, "step %lld: loss is not finite (%g); training diverged", (long long)step, loss);
  else
    snprintf(msg, n, "step %lld: gradient is not finite (loss %g); training diverged", (long long)step, loss);
}
