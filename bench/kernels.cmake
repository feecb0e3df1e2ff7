# Per-kernel micro-benchmarks; results and how to run them: docs/PERFORMANCE.md,
# "Kernel micro-benchmarks". Both binaries land in the build root, beside cuvae.

# The CPU twins of the fused kernels (src/backend/cpu/), with Google Benchmark (Debian's libbenchmark-dev).
find_package(benchmark REQUIRED)
add_executable(cuvae-kernels-bench-cpu ${CMAKE_CURRENT_SOURCE_DIR}/kernels_cpu_bench.cc)
target_link_libraries(cuvae-kernels-bench-cpu PRIVATE cuvae benchmark::benchmark)
set_target_properties(cuvae-kernels-bench-cpu PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})

# The fused CUDA kernels themselves (kernels/cuvae_kernels.h), timed with CUDA events; native nvcc build only.
# Without a device the binary says so and exits 0.
if(CUVAE_CUDA)
  add_executable(cuvae-kernels-bench-gpu ${CMAKE_CURRENT_SOURCE_DIR}/kernels_gpu_bench.cu)
  # cuvae before cuvae_cuda, as every executable of the project lists them (see CMakeLists.txt).
  target_link_libraries(cuvae-kernels-bench-gpu PRIVATE cuvae cuvae_cuda CUDA::cudart)
  set_target_properties(cuvae-kernels-bench-gpu PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
endif()
