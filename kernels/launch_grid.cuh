// Grid sizes of the bandwidth-bound kernels: enough blocks to fill every SM, from the device's SM count. Used only
// for elementwise kernels whose result does not depend on the grid; reductions fix their order from the sizes alone.
#pragma once
#include "cuda_compat.h"

#include <stddef.h>

// The current device's SM count, asked once per process (132 on an H100 SXM; 1 under the emulation). Should the
// query fail, 132 stands in and the error the query left behind is cleared, so the caller's cudaGetLastError()
// reports only its own launch.
inline int device_sm_count() {
  static const int count = [] {
    int device = 0, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms < 1) {
      (void)cudaGetLastError();
      sms = 132;
    }
    return sms;
  }();
  return count;
}

// Blocks of `threads` threads for `items` work items (one item per thread per grid-stride iteration): one full
// wave of resident blocks (2048 threads per SM, sm_80 and sm_90), fewer when the items do not fill it.
inline int resident_grid(size_t items, int threads) {
  const size_t wave = (size_t)device_sm_count() * (2048 / threads);
  const size_t want = (items + threads - 1) / threads;
  return (int)(want < wave ? (want > 0 ? want : 1) : wave);
}
