/* The device choices a user names with --device (auto | cpu | cuda), checked in one place (src/backend/backend.c). */
#ifndef CUVAE_DEVICE_H
#define CUVAE_DEVICE_H
#ifdef __cplusplus
extern "C" {
#endif

/* The choices, as error messages list them. */
#define CUVAE_DEVICE_CHOICES "auto, cpu or cuda"

/* 0 when device is one of the choices; otherwise -1 with the message "--device 'X': expected auto, cpu or cuda"
 * (cuvae_last_error). */
int cuvae_device_check(const char *device);

#ifdef __cplusplus
}
#endif
#endif
