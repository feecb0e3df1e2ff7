/* Shared by train.c, eval.c and the CLI: loading the configured data and checking it against the config; run
 * directories. */
#ifndef CUVAE_TRAIN_INTERNAL_H
#define CUVAE_TRAIN_INTERNAL_H
#include "cuvae/config.h"
#include "cuvae/data.h"
#ifdef __cplusplus
extern "C" {
#endif

/* Loads the train (which = 0) or test (which = 1) split named by cfg and checks it fits the model
 * (finite, in [0, 1] for a Bernoulli decoder). */
int cuvae_load_split(const cuvae_config *cfg, int which, cuvae_dataset *ds);
/* mkdir -p PATH; fails with a message when a component cannot be created or PATH is not a directory. */
int cuvae_make_dirs(const char *path);

#ifdef __cplusplus
}
#endif
#endif
