// The skip rule (include/cuvae/optimizer.h) of a config with given [train] skip_* keys, as both backends build it;
// shared by the tests of the verdict on the host and on the device.
#pragma once
#include "cuvae/config.h"
#include "cuvae/optimizer.h"

namespace cuvae_test {

inline cuvae_skip_rule rule_of(float above, float zscore, int window, int nonfinite, int limit) {
  cuvae_config c;
  cuvae_config_defaults(&c);
  c.skip_grad_norm = above;
  c.skip_zscore = zscore;
  c.skip_window = window;
  c.skip_nonfinite = nonfinite;
  c.skip_limit = limit;
  return cuvae_skip_rule_from(&c);
}

}  // namespace cuvae_test
