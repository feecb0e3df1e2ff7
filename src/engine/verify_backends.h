/* The comparison behind cuvae verify (include/cuvae/verify.h) on backends the caller made: the tests give it the
 * emulated CUDA backend, or one configured to differ. Private to src/ and the tests. */
#ifndef CUVAE_VERIFY_BACKENDS_H
#define CUVAE_VERIFY_BACKENDS_H
#include "backend.h"
#include "cuvae/verify.h"
#ifdef __cplusplus
extern "C" {
#endif

/* cuvae_verify's comparison of cpu against cuda, both made for model m from cfg (finalized) with the sets train and
 * test, neither stepped yet: 0 when both ran (see out->agree), -1 with cuvae_last_error() otherwise. */
int cuvae_verify_backends(const cuvae_config *cfg, const cuvae_model *m, const cuvae_dataset *train,
                          const cuvae_dataset *test, cuvae_backend *cpu, cuvae_backend *cuda,
                          const cuvae_verify_opts *opts, cuvae_verify_result *out);

#ifdef __cplusplus
}
#endif
#endif
