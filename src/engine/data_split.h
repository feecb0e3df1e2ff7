/* The data splits a config names, loaded and checked against the model it configures (labels of a conditional
 * model, [0, 1] for a Bernoulli decoder, binarization drawn at load); and mkdir -p for run directories. Shared by
 * training, evaluation, inference, pPCA and the benchmarks. */
#ifndef CUVAE_DATA_SPLIT_H
#define CUVAE_DATA_SPLIT_H
#include "cuvae/config.h"
#include "cuvae/data.h"
#ifdef __cplusplus
extern "C" {
#endif

/* Which split of a config: its train or its test files (NONE: no data, for callers that take an optional split). */
enum { CUVAE_SPLIT_NONE = -1, CUVAE_SPLIT_TRAIN = 0, CUVAE_SPLIT_TEST = 1 };

/* Loads the CUVAE_SPLIT_TRAIN or CUVAE_SPLIT_TEST split named by cfg and checks it fits the model (finite, in
 * [0, 1] for a Bernoulli decoder, labels inside 0..classes-1 for a conditional one); static binarization (and a
 * dynamic run's test split) is drawn here, from the stream of rng.h. */
int cuvae_load_split(const cuvae_config *cfg, int which, cuvae_dataset *ds);
/* mkdir -p PATH; fails with a message when a component cannot be created or PATH is not a directory. */
int cuvae_make_dirs(const char *path);

#ifdef __cplusplus
}
#endif
#endif
