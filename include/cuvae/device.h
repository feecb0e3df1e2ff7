/* The device choices a user names with --device (auto | cpu | cuda), checked in one place (src/backend/backend.c). */
#ifndef CUVAE_DEVICE_H
#define CUVAE_DEVICE_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* The choices, as error messages list them. */
#define CUVAE_DEVICE_CHOICES "auto, cpu or cuda"

/* 0 when device is one of the choices; otherwise -1 with the message "--device 'X': expected auto, cpu or cuda"
 * (cuvae_last_error). */
int cuvae_device_check(const char *device);

/* Which CUDA device a rank uses: local_rank mod devices (local_rank: its place among the `local_size` ranks of its
 * machine). Several ranks on one machine each take their own GPU while there are enough; more ranks than GPUs share
 * them round-robin, which note[0..n) says ("" when nothing is worth saying). -1 when devices < 1. */
int cuvae_device_for_rank(int local_rank, int local_size, int devices, char *note, size_t n);
/* Makes the rank's device (cuvae_device_for_rank) the current CUDA device, for the backend created next; a no-op
 * without a CUDA device, in a single process (local_size 1), and when CUDA_VISIBLE_DEVICES is set (a launcher or
 * wrapper placed the ranks itself). note: as above. -1 with a message when cudaSetDevice fails. */
int cuvae_device_place_rank(int local_rank, int local_size, char *note, size_t n);

#ifdef __cplusplus
}
#endif
#endif
