/* cuvae-bench: the results table and the JSON file. */
#include "bench_report.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "cuvae/blas.h"
#include "cuvae/error.h"

double bench_result_peak(const bench_result *r) {
  return r->bf16 ? r->bf16_peak_gflops : r->peak_gflops;
}

static const char *precision_name(const bench_result *r) { return r->bf16 ? "bf16" : r->tf32 ? "tf32" : "fp32"; }

void bench_print_table(FILE *out, const bench_result *res, int n) {
  fprintf(out, "%-8s %-6s %6s %10s %10s %11s %9s %7s %7s %9s %12s %12s %12s\n", "config", "device", "batch",
          "median_ms", "min_ms", "samples/s", "GFLOP/s", "%peak", "%GEMM", "RSS_MiB", "H100_fp32_ms", "H100_tf32_ms",
          "launch_ms");
  for (int i = 0; i < n; i++) {
    const bench_result *r = &res[i];
    char gemm[16];
    if (r->gemm_s >= 0)
      snprintf(gemm, sizeof gemm, "%.1f%%", 100.0 * r->gemm_s / r->median_s);
    else
      snprintf(gemm, sizeof gemm, "n/a");
    fprintf(out, "%-8s %-6s %6d %10.3f %10.3f %11.0f %9.1f %6.1f%% %7s %9.1f %12.4f %12.4f %12.4f\n", r->name,
            r->device, r->batch, 1e3 * r->median_s, 1e3 * r->min_s, r->samples_per_s, r->gflops,
            100.0 * r->gflops / bench_result_peak(r), gemm, r->rss_mib, 1e3 * r->roof.fp32_s, 1e3 * r->roof.tf32_s,
            1e3 * r->roof.launch_floor_s);
  }
  fprintf(out, "\nGEMM peak: ");
  for (int i = 0; i < n; i++) {
    int seen = 0;
    for (int j = 0; j < i; j++) seen |= strcmp(res[j].peak_desc, res[i].peak_desc) == 0;
    if (!seen) fprintf(out, "%s%.1f GFLOP/s (%s)", i ? "; " : "", res[i].peak_gflops, res[i].peak_desc);
  }
  for (int i = 0; i < n; i++) {
    int seen = 0;
    for (int j = 0; j < i; j++) seen |= strcmp(res[j].bf16_peak_desc, res[i].bf16_peak_desc) == 0;
    if (!seen && res[i].bf16_peak_desc[0])
      fprintf(out, "%sbf16 matmul peak: %.1f GFLOP/s (%s)", i ? "; " : "\n", res[i].bf16_peak_gflops,
              res[i].bf16_peak_desc);
  }
  for (int i = 0; i < n; i++)
    if (res[i].bf16 && strcmp(res[i].device, "cpu") != 0)
      fprintf(out, "\n%s ran precision = bf16 on %s: %%peak is against the cuBLASLt bf16 peak (%.1f%%; %.1f%% of the "
                   "sgemm peak); %%GEMM is its own bf16 GEMMs (the backend's cuBLASLt calls, epilogues included)",
              res[i].name, res[i].device, 100.0 * res[i].gflops / res[i].bf16_peak_gflops,
              100.0 * res[i].gflops / res[i].peak_gflops);
    else if (strcmp(res[i].device, "cpu") != 0)
      fprintf(out, "\n%s ran precision = %s on %s: %%GEMM is the step's GEMMs alone through the backend's own "
                   "cuBLASLt calls (epilogues included)", res[i].name, res[i].tf32 ? "tf32" : "fp32", res[i].device);
    else if (res[i].bf16)
      fprintf(out, "\n%s ran precision = bf16: %%peak is its step's GEMM FLOP rate against the bf16 matmul peak "
                   "(%.1f%%; %.1f%% of the sgemm peak), %%GEMM its GEMMs replayed through the library's bf16 path",
              res[i].name, 100.0 * res[i].gflops / res[i].bf16_peak_gflops,
              100.0 * res[i].gflops / res[i].peak_gflops);
    else if (strcmp(res[i].device, "cpu") == 0)
      fprintf(out, "\n%s ran precision = %s: %%peak is against the OpenBLAS sgemm peak, %%GEMM its GEMMs replayed "
                   "through the library's fp32 path (oneDNN's fp32 matmul, as the step)", res[i].name,
              res[i].tf32 ? "tf32 (fp32 on the CPU)" : "fp32");
  for (int i = 0; i < n; i++) {
    int seen = 0;
    for (int j = 0; j < i; j++) seen |= strcmp(res[j].gemm_engine, res[i].gemm_engine) == 0;
    if (!seen) fprintf(out, "%s%s", i ? "; " : "\nstep GEMMs: ", res[i].gemm_engine);
  }
  fprintf(out, "\nBLAS: %s\n", cuvae_blas_describe());
  for (int i = 0; i < n; i++)
    if (res[i].background > BUSY_WARN)
      fprintf(out, "warning: %s: other processes used %.0f%% of the CPUs during its timed steps; its times are not "
                   "those of an idle machine\n", res[i].name, 100.0 * res[i].background);
  for (int i = 0; i < n; i++)
    if (res[i].gflops > bench_result_peak(&res[i]))
      fprintf(out, "warning: %s: its step ran faster than the GEMM peak measured beside it (%.0f%%): the host was "
                   "busy while the peak was measured, so %%peak means nothing in this run\n", res[i].name,
              100.0 * res[i].gflops / bench_result_peak(&res[i]));
  fprintf(out, "FLOPs: dense-layer GEMMs only (2*B*in*out forward, dW, and dX except the first encoder layer); "
               "elementwise work ignored.\n");
  fprintf(out, "H100 SXM peaks used: FP32 %.0f TFLOP/s, TF32 %.0f TFLOP/s (dense tensor core), HBM3 %.2f TB/s; "
               "prediction = max(FLOPs/peak, bytes/bandwidth); launch floor = launches x %.1f us (assumed).\n",
          BENCH_H100_FP32_FLOPS * 1e-12, BENCH_H100_TF32_FLOPS * 1e-12, BENCH_H100_HBM_BYTES * 1e-12,
          BENCH_H100_LAUNCH_S * 1e6);
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

/* A JSON number, or null when not finite / not measured. */
static void json_number(FILE *f, double v, const char *fmt) {
  if (isfinite(v))
    fprintf(f, fmt, v);
  else
    fputs("null", f);
}

/* One entry of "results". */
static void write_result_json(FILE *f, const bench_result *r) {
  fprintf(f, "\n  {\"config\": ");
  json_string(f, r->name);
  fprintf(f, ", \"path\": ");
  json_string(f, r->path);
  fprintf(f, ", \"arch\": ");
  json_string(f, r->arch);
  fprintf(f, ", \"device\": ");
  json_string(f, r->device);
  fprintf(f, ", \"batch\": %d, \"threads\": %d, \"precision\": \"%s\",\n   \"median_step_ms\": ", r->batch, r->threads,
          precision_name(r));
  json_number(f, 1e3 * r->median_s, "%.4f");
  fprintf(f, ", \"min_step_ms\": ");
  json_number(f, 1e3 * r->min_s, "%.4f");
  fprintf(f, ", \"samples_per_s\": ");
  json_number(f, r->samples_per_s, "%.1f");
  fprintf(f, ", \"gflops\": ");
  json_number(f, r->gflops, "%.3f");
  fprintf(f, ", \"sgemm_peak_gflops\": ");
  json_number(f, r->peak_gflops, "%.2f");
  fprintf(f, ", \"bf16_matmul_peak_gflops\": ");
  json_number(f, r->bf16_peak_gflops, "%.2f");
  fprintf(f, ", \"peak_fraction\": ");
  json_number(f, r->gflops / bench_result_peak(r), "%.4f");
  fprintf(f, ", \"sgemm_peak_fraction\": ");
  json_number(f, r->gflops / r->peak_gflops, "%.4f");
  fprintf(f, ", \"bf16_peak_fraction\": ");
  json_number(f, r->gflops / r->bf16_peak_gflops, "%.4f");
  fprintf(f, ",\n   \"gemm_ms\": ");
  json_number(f, r->gemm_s >= 0 ? 1e3 * r->gemm_s : NAN, "%.4f");
  fprintf(f, ", \"gemm_fraction\": ");
  json_number(f, r->gemm_s >= 0 ? r->gemm_s / r->median_s : NAN, "%.4f");
  fprintf(f, ", \"gemm_gflops\": ");
  json_number(f, r->gemm_s > 0 ? r->flops / r->gemm_s * 1e-9 : NAN, "%.3f");
  fprintf(f, ", \"peak_rss_mib\": ");
  json_number(f, r->rss_mib, "%.1f");
  fprintf(f, ", \"background_cpu_fraction\": ");
  json_number(f, r->background, "%.3f");
  fprintf(f, ", \"gemm_engine\": ");
  json_string(f, r->gemm_engine);
  fprintf(f, ", \"memory_plan\": ");
  json_string(f, r->memory_plan);
  fprintf(f, ",\n   \"flops_per_step\": %.0f, \"bytes_per_step\": %.0f, \"launches_per_step\": %d", r->flops, r->bytes,
          r->launches);
  fprintf(f, ", \"h100_pred_ms_fp32\": %.5f, \"h100_pred_ms_tf32\": %.5f", 1e3 * r->roof.fp32_s, 1e3 * r->roof.tf32_s);
  fprintf(f, ", \"h100_kernel_sum_ms_fp32\": %.5f, \"h100_kernel_sum_ms_tf32\": %.5f", 1e3 * r->roof.fp32_kernel_sum_s,
          1e3 * r->roof.tf32_kernel_sum_s);
  fprintf(f, ", \"h100_launch_floor_ms\": %.5f}", 1e3 * r->roof.launch_floor_s);
}

int bench_write_json(const char *path, int steps, int warmup, const bench_result *res, int n) {
  FILE *f = fopen(path, "w");
  if (!f) return cuvae_error("--json %s: cannot write: %s", path, strerror(errno));
  fprintf(f, "{\"impl\": \"cuvae\", \"device\": ");
  json_string(f, res[0].device);
  fprintf(f, ", \"threads\": %d, \"blas\": ", res[0].threads);
  json_string(f, cuvae_blas_describe());
  fprintf(f, ", \"sgemm_peak_gflops\": ");
  json_number(f, res[0].peak_gflops, "%.2f");
  fprintf(f, ", \"sgemm_peak\": ");
  json_string(f, res[0].peak_desc);
  fprintf(f, ", \"bf16_matmul_peak_gflops\": ");
  json_number(f, res[0].bf16_peak_gflops, "%.2f");
  fprintf(f, ", \"bf16_matmul_peak\": ");
  json_string(f, res[0].bf16_peak_desc);
  fprintf(f, ", \"steps\": %d, \"warmup\": %d", steps, warmup);
  fprintf(f, ", \"h100\": {\"fp32_tflops\": %.0f, \"tf32_tflops\": %.0f, \"hbm_tb_per_s\": %.2f, \"launch_us\": %.1f}",
          BENCH_H100_FP32_FLOPS * 1e-12, BENCH_H100_TF32_FLOPS * 1e-12, BENCH_H100_HBM_BYTES * 1e-12,
          BENCH_H100_LAUNCH_S * 1e6);
  if (n == 1) {  /* one config: its headline numbers also at the top level (comparison scripts read either) */
    fprintf(f, ", \"config\": ");
    json_string(f, res[0].name);
    fprintf(f, ", \"batch\": %d, \"samples_per_s\": ", res[0].batch);
    json_number(f, res[0].samples_per_s, "%.1f");
    fprintf(f, ", \"median_step_ms\": ");
    json_number(f, 1e3 * res[0].median_s, "%.4f");
  }
  fprintf(f, ",\n \"results\": [");
  for (int i = 0; i < n; i++) {
    if (i) fputc(',', f);
    write_result_json(f, &res[i]);
  }
  fprintf(f, "\n ]}\n");
  if (fclose(f) != 0) return cuvae_error("--json %s: cannot write: %s", path, strerror(errno));
  return 0;
}

