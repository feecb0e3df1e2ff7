/* Checks the fuzz harnesses apply to what a parser accepted: a violated one aborts, which the fuzzer reports. */
#ifndef CUVAE_FUZZ_CHECKS_H
#define CUVAE_FUZZ_CHECKS_H
#include <stdio.h>
#include <stdlib.h>

#include "cuvae/data.h"
#include "cuvae/error.h"

#define FUZZ_REQUIRE(cond)                                                                  \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      fprintf(stderr, "fuzz: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);        \
      abort();                                                                              \
    }                                                                                       \
  } while (0)

/* A failed parse must leave a message; a successful one a consistent array. */
static inline void fuzz_check_array(int rc, const cuvae_array *a) {
  if (rc != 0) {
    FUZZ_REQUIRE(rc == -1 && cuvae_last_error()[0] != '\0');
    FUZZ_REQUIRE(a->data == NULL && a->count == 0);
    return;
  }
  FUZZ_REQUIRE(a->data != NULL && a->ndim >= 1 && a->ndim <= 4);
  size_t count = 1;
  for (int d = 0; d < a->ndim; d++) count *= a->shape[d];
  FUZZ_REQUIRE(count == a->count && count >= 1 && count <= CUVAE_MAX_ELEMENTS);
}

#endif
