// A device allocation for the CUDA tests (emulated and native). Copies share the allocation and the last one
// frees it: a launch copies its arguments, which under the emulation copies a handle like `buf.p` by value.
#pragma once
#include <gtest/gtest.h>

#include <memory>
#include <vector>

template <typename T>
struct DeviceVec {
  std::shared_ptr<T> owner;
  T *p = nullptr;
  size_t n = 0;
  explicit DeviceVec(size_t count) : n(count) {
    EXPECT_EQ(cudaSuccess, cudaMalloc((void **)&p, bytes()));
    owner.reset(p, [](T *q) { cudaFree(q); });
  }
  explicit DeviceVec(const std::vector<T> &h) : DeviceVec(h.size()) { put(h); }
  size_t bytes() const { return n * sizeof(T); }
  void put(const std::vector<T> &h) {
    EXPECT_EQ(cudaSuccess, cudaMemcpy(p, h.data(), bytes(), cudaMemcpyHostToDevice));
  }
  void zero() { EXPECT_EQ(cudaSuccess, cudaMemset(p, 0, bytes())); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaSuccess, cudaMemcpy(h.data(), p, bytes(), cudaMemcpyDeviceToHost));
    return h;
  }
};
