// cuRAND's device API under the CUDA emulation: the real curand_kernel.h with its DEVICE branches
// (NV_IF_ELSE_TARGET(NV_IS_DEVICE, ...)), so that _curand_box_muller calls __sincosf and the device's logf/expf as a
// GPU does (emu_intrinsics.h), not the host branch's sinf/cosf. Found before CUDA's own header because tests/emu
// comes first on the emulated targets' include path; under nvcc it only forwards to the real header.
#pragma once
#if defined(CUVAE_CUDA_EMU) && !defined(__CUDACC__)
#include "cuda_emu.h"
// (keep the order)
#include <math.h>

#include <cmath>
#include <nv/target>
#include <type_traits>
#pragma push_macro("_NV_TARGET_BOOL___NV_IS_DEVICE")
#pragma push_macro("_NV_TARGET_BOOL___NV_IS_HOST")
#undef _NV_TARGET_BOOL___NV_IS_DEVICE
#undef _NV_TARGET_BOOL___NV_IS_HOST
#define _NV_TARGET_BOOL___NV_IS_DEVICE 1
#define _NV_TARGET_BOOL___NV_IS_HOST 0
#define logf(x) ::cuda_emu::device_logf(x)
#define expf(x) ::cuda_emu::device_expf(x)
#include_next <curand_kernel.h>
#undef logf
#undef expf
#pragma pop_macro("_NV_TARGET_BOOL___NV_IS_HOST")
#pragma pop_macro("_NV_TARGET_BOOL___NV_IS_DEVICE")
#else
#include_next <curand_kernel.h>
#endif
