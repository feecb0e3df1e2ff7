/* Error reporting: every fallible libcuvae function returns 0 on success and -1 on failure, after storing
 * one human-readable message (naming the file/key/value at fault) that cuvae_last_error() returns. */
#ifndef CUVAE_ERROR_H
#define CUVAE_ERROR_H
#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CUVAE_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CUVAE_PRINTF(a, b)
#endif

/* Stores the message (printf-style) and returns -1, so callers can write `return cuvae_error(...)`. */
int cuvae_error(const char *fmt, ...) CUVAE_PRINTF(1, 2);
/* The last stored message ("" if none). Thread-local. */
const char *cuvae_last_error(void);
void cuvae_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
