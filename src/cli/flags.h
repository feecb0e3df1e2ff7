/* Reading one flag's value from a command line, for cuvae's commands and cuvae-bench. */
#ifndef CUVAE_CLI_FLAGS_H
#define CUVAE_CLI_FLAGS_H

/* "--flag VALUE" or "--flag=VALUE" at argv[*i]; advances *i past the value. NULL when argv[*i] is not flag; then
 * *missing is set (and "error: FLAG needs a value" printed) when it is the flag but its value is missing. */
const char *cli_flag_value(int argc, char **argv, int *i, const char *flag, int *missing);
/* v, a flag's value, as a whole decimal integer in [lo, hi] into *out: 0, or 2 (the usage exit code) after
 * "error: FLAG 'V': expected an integer from LO to HI". */
int cli_flag_ll(const char *flag, const char *v, long long lo, long long hi, long long *out);
int cli_flag_int(const char *flag, const char *v, int lo, int hi, int *out);

#endif
