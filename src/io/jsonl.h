/* A reader of one row of the run's row logs (metrics.jsonl, steps.jsonl): a flat JSON object on one line. */
#ifndef CUVAE_JSONL_H
#define CUVAE_JSONL_H
#ifdef __cplusplus
extern "C" {
#endif

typedef enum cuvae_jsonl_kind {
  CUVAE_JSONL_NUMBER,
  CUVAE_JSONL_BOOL,
  CUVAE_JSONL_NULL,
  CUVAE_JSONL_STRING
} cuvae_jsonl_kind;

#define CUVAE_JSONL_KEY_MAX 127  /* bytes of a key, decoded */

/* Called for each field in order: the decoded key, its kind and, for a number or a boolean, its value (true 1,
 * false 0; NaN for null and strings). A non-zero return stops the row and is returned. */
typedef int (*cuvae_jsonl_visit)(void *ctx, const char *key, cuvae_jsonl_kind kind, double value);

/* Parses line, one row with or without its line end, as {"key": value, ...} with values that are numbers, true,
 * false, null or strings; nested objects and arrays are refused. A number may also be spelt nan, -nan, inf or -inf,
 * as C's printf writes a non-finite double. Returns 0, visit's non-zero return, or -1 with a message (from
 * "column C:", 1-based) saying what was expected where. */
int cuvae_jsonl_parse(const char *line, cuvae_jsonl_visit visit, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
