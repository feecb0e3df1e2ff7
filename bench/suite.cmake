# cuvae-bench: times training steps of configs/bench/*.ini on a backend; see docs/PERFORMANCE.md,
# section "cuvae-bench". Built into the build directory's root (build/cuvae-bench), next to build/cuvae.
add_executable(cuvae-bench
  ${CMAKE_CURRENT_SOURCE_DIR}/cuvae_bench.c   # command line, step timing, table and JSON
  ${CMAKE_CURRENT_SOURCE_DIR}/bench_model.c   # FLOPs, bytes and launches per step; the H100 roofline
  ${CMAKE_CURRENT_SOURCE_DIR}/bench_gemm.c    # sgemm peak (cblas); cuBLAS / cuBLASLt bf16 peaks in CUDA builds
  ${CMAKE_CURRENT_SOURCE_DIR}/bench_report.c  # the table and the JSON file
  ${CMAKE_CURRENT_SOURCE_DIR}/bench_dnnl.c    # oneDNN: bf16 peak, the CPU's GEMM replay (library path), --gemm-shapes
  ${PROJECT_SOURCE_DIR}/src/cli/flags.c       # the CLI's flag reader
)
# As the CLI: cuvae, then cuvae_cuda in CUDA builds; the bench itself calls cuBLAS and the runtime there.
target_link_libraries(cuvae-bench PRIVATE cuvae
  $<$<BOOL:${CUVAE_CUDA}>:cuvae_cuda> $<$<BOOL:${CUVAE_CUDA}>:CUDA::cudart>
  $<$<BOOL:${CUVAE_CUDA}>:CUDA::cublas> $<$<BOOL:${CUVAE_CUDA}>:CUDA::cublasLt>)
# backend.h, data_split.h, cli/flags.h, gemm_dnnl.h; and oneDNN's dnnl.h, which bench_dnnl.c calls directly (libcuvae
# links CUVAE_DNNL publicly)
target_include_directories(cuvae-bench PRIVATE ${CUVAE_PRIVATE_INCLUDE_DIRS} ${CUVAE_DNNL_INCLUDE})
set_target_properties(cuvae-bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR})
