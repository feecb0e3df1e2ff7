// kernels/bias_act.cu against its CPU twins: bias_act_forward_cuda vs bias_act_forward_cpu,
// bias_act_backward_cuda vs bias_act_backward_cpu, bias_grad_cuda vs a double column sum and vs the db of
// dense_backward_cpu. Shapes n in {1, 7, 400, 1000} x B in {1, 3, 128, 257} (none a multiple of every block size),
// relu / tanh / none, extreme inputs; a narrow layer whose rows are split over blocks (20 x 512); determinism,
// argument validation and graph replay.
#include "cuda_compat.h"

#include "device_vec.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <random>
#include <vector>

#include "cuvae/cpu.h"
#include "cuvae_kernels.h"

namespace {

#define CUDA_OK(call) ASSERT_EQ(cudaSuccess, (call))

constexpr int kNs[] = {1, 7, 400, 1000};
constexpr int kBs[] = {1, 3, 128, 257};
constexpr cuvae_activation kActs[] = {CUVAE_ACT_RELU, CUVAE_ACT_TANH, CUVAE_ACT_NONE};
const double kU = ldexp(1.0, -24);  // unit roundoff of float: one rounding errs by at most kU * |result|

using DevBuf = DeviceVec<float>;  // tests/cuda/device_vec.h

std::vector<float> uniform(size_t n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> h(n);
  for (float &v : h) v = dist(rng);
  return h;
}

// Pre-activations y + b: uniform in [-3, 3] (relu's kink and tanh's curved part), with every 13th element
// extreme (+-100: tanh saturated to +-1, relu far from 0) and every 17th an exact 0 of y + b.
void make_forward_inputs(int B, int n, unsigned seed, std::vector<float> *y, std::vector<float> *b) {
  *b = uniform((size_t)n, -1.0f, 1.0f, seed);
  *y = uniform((size_t)B * n, -3.0f, 3.0f, seed + 1);
  for (size_t i = 0; i < y->size(); i++) {
    const float bj = (*b)[i % n];
    if (i % 13 == 5) (*y)[i] = (i % 2 ? 100.0f : -100.0f) - bj;
    if (i % 17 == 3) (*y)[i] = -bj;
  }
}

// |gpu - cpu| <= atol + rtol |cpu| over two arrays; returns the largest |gpu - cpu| / (atol + rtol |cpu|) seen
// (the ratio to the tolerance; 0 when all are equal).
double expect_close(const std::vector<float> &gpu, const std::vector<float> &cpu, double atol, double rtol,
                    const char *what) {
  double worst = 0.0;
  int reported = 0;
  for (size_t i = 0; i < cpu.size(); i++) {
    const double err = fabs((double)gpu[i] - (double)cpu[i]), tol = atol + rtol * fabs((double)cpu[i]);
    if (err > 0.0) worst = std::max(worst, tol > 0.0 ? err / tol : INFINITY);
    if (!(err <= tol) && reported++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: gpu " << gpu[i] << " cpu " << cpu[i] << " tol " << tol;
  }
  return worst;
}

TEST(KernelBiasAct, ForwardMatchesCpu) {
  double worst_tanh = 0.0;
  for (int n : kNs)
    for (int B : kBs)
      for (cuvae_activation act : kActs) {
        SCOPED_TRACE(testing::Message() << "B " << B << " n " << n << " act " << act);
        std::vector<float> y, b;
        make_forward_inputs(B, n, 100u * B + n, &y, &b);
        DevBuf dy(y), db(b);
        CUDA_OK(bias_act_forward_cuda(dy.p, db.p, B, n, act, 0));
        CUDA_OK(cudaDeviceSynchronize());
        bias_act_forward_cpu(y.data(), b.data(), B, n, act);
        // relu / none: one float addition (and a comparison), correctly rounded on both sides: bitwise equal.
        // tanh: the same rounded sum, then tanhf: CUDA's errs by <= 2 ulp (CUDA C Programming Guide, float
        // functions), glibc's by <= 2 ulp (x86_64, "Known Maximum Errors in Math Functions"), so the two differ by
        // <= 4 ulp <= 4 * 2^-23 |tanh| = 8 kU |tanh|, and |tanh| <= (1 + 4 kU) |cpu|: rtol 8.01 kU. tanh(x) ~ x near
        // 0 keeps the relative bound meaningful down to the smallest inputs (|y + b| = 0 gives exactly 0 on both).
        const double rtol = act == CUVAE_ACT_TANH ? 8.01 * kU : 0.0;
        const double w = expect_close(dy.get(), y, 0.0, rtol, "y");
        if (act == CUVAE_ACT_TANH) worst_tanh = std::max(worst_tanh, w);
      }
  printf("bias_act_forward tanh: max |gpu - cpu| = %.3g of the tolerance 8.01 u |cpu|\n", worst_tanh);
}

TEST(KernelBiasAct, BackwardMatchesCpu) {
  for (int n : kNs)
    for (int B : kBs)
      for (cuvae_activation act : kActs) {
        SCOPED_TRACE(testing::Message() << "B " << B << " n " << n << " act " << act);
        std::vector<float> y, b;
        make_forward_inputs(B, n, 7u * B + n, &y, &b);
        bias_act_forward_cpu(y.data(), b.data(), B, n, act);  // a real layer output: relu zeros, tanh +-1
        std::vector<float> g = uniform((size_t)B * n, -2.0f, 2.0f, 31u * B + n);
        DevBuf d_y(y), d_g(g);
        CUDA_OK(bias_act_backward_cuda(d_y.p, d_g.p, B, n, act, 0));
        CUDA_OK(cudaDeviceSynchronize());
        bias_act_backward_cpu(y.data(), g.data(), B, n, act);
        // relu: a mask, none: the identity, tanh: dy * (1 - y*y) with y*y rounded on its own (__fmul_rn, no FMA)
        // then one subtraction and one multiplication, each correctly rounded in the same order on both sides:
        // bitwise equal, and checked as such.
        expect_close(d_g.get(), g, 0.0, 0.0, "dy");
      }
}

// More elements than the launch has threads (1024 blocks x 256): each thread takes several elements, and its
// column advances by (grid stride mod n) per element. n = 777 does not divide the stride 262144.
TEST(KernelBiasAct, GridStrideBeyondOneWave) {
  const int B = 1000, n = 777;
  for (cuvae_activation act : kActs) {
    SCOPED_TRACE(testing::Message() << "act " << act);
    std::vector<float> y, b;
    make_forward_inputs(B, n, 123, &y, &b);
    DevBuf d_y(y), d_b(b);
    CUDA_OK(bias_act_forward_cuda(d_y.p, d_b.p, B, n, act, 0));
    CUDA_OK(cudaDeviceSynchronize());
    bias_act_forward_cpu(y.data(), b.data(), B, n, act);
    expect_close(d_y.get(), y, 0.0, act == CUVAE_ACT_TANH ? 8 * kU : 0.0, "y");  // as in ForwardMatchesCpu
    std::vector<float> g = uniform((size_t)B * n, -2.0f, 2.0f, 124);
    DevBuf d_g(g);
    CUDA_OK(bias_act_backward_cuda(d_y.p, d_g.p, B, n, act, 0));
    CUDA_OK(cudaDeviceSynchronize());
    bias_act_backward_cpu(y.data(), g.data(), B, n, act);
    expect_close(d_g.get(), g, 0.0, 2 * kU, "dy");  // as in BackwardMatchesCpu
  }
}

TEST(KernelBiasAct, BiasGradMatchesColumnSums) {
  double worst = 0.0, worst_dense = 0.0;
  for (int n : kNs)
    for (int B : kBs) {
      SCOPED_TRACE(testing::Message() << "B " << B << " n " << n);
      std::vector<float> dy = uniform((size_t)B * n, -1.0f, 1.0f, 11u * B + n);
      for (size_t i = 0; i < dy.size(); i += 29) dy[i] *= 1000.0f;  // a spread of magnitudes
      DevBuf d_dy(dy), d_db((size_t)n), scratch(CUVAE_SUM_SQUARES_PARTIALS);
      CUDA_OK(bias_grad_cuda(d_dy.p, d_db.p, scratch.p, B, n, 0));
      CUDA_OK(cudaDeviceSynchronize());
      const std::vector<float> got = d_db.get();

      // The CPU twin: dense_backward_cpu's db (float, rows in order) with act = none (dy unchanged), in = 1.
      std::vector<float> x((size_t)B, 1.0f), W((size_t)n, 1.0f), dW((size_t)n), db_cpu((size_t)n);
      std::vector<float> g = dy;
      dense_backward_cpu(x.data(), W.data(), nullptr, g.data(), dW.data(), db_cpu.data(), nullptr, B, 1, n,
                         CUVAE_ACT_NONE);
      // Error bound per column j: a thread adds ceil(B/8) terms in float, then 3 tree levels: every term passes
      // through at most ceil(B/8) + 3 additions, each erring by <= kU * (a partial sum <= sum_r |dy[r][j]|), so
      // |gpu - exact| <= (ceil(B/8) + 3) kU sum|dy|. With the rows split into S slices of R rows (R a multiple of
      // 8, B > (S - 1) R; narrow layers) a term passes through R/8 + 3 additions in its slice and S - 1 adding
      // the slices, and R/8 + S - 1 <= ceil(B/8): the same bound holds. The CPU twin's serial float sum errs by
      // <= B kU sum|dy|.
      const int path = (B + 7) / 8 + 3;
      for (int j = 0; j < n; j++) {
        double exact = 0.0, abs_sum = 0.0;
        for (int r = 0; r < B; r++) exact += dy[(size_t)r * n + j], abs_sum += fabs(dy[(size_t)r * n + j]);
        const double tol = path * kU * abs_sum, tol_dense = (path + B) * kU * abs_sum;
        const double err = fabs(got[j] - exact), err_dense = fabs((double)got[j] - db_cpu[j]);
        ASSERT_LE(err, tol) << "column " << j << ": gpu " << got[j] << " exact " << exact;
        ASSERT_LE(err_dense, tol_dense) << "column " << j << ": gpu " << got[j] << " cpu " << db_cpu[j];
        if (B == 1) {
          ASSERT_EQ(dy[j], got[j]);  // one row: the sum is the row itself, exactly
        }
        if (tol > 0) worst = std::max(worst, err / tol);
        if (tol_dense > 0) worst_dense = std::max(worst_dense, err_dense / tol_dense);
      }
    }
  printf("bias_grad: max |gpu - exact| = %.3g of its bound, max |gpu - dense_backward_cpu| = %.3g of its bound\n",
         worst, worst_dense);
}

// A narrow layer (20 columns, 512 rows: one block of columns) has its rows split into slices (kernels/bias_act.cu,
// grad_split: min(1024, ceil(512 / 64), 8192 / 20) = 8 slices of 64 rows), each slice's column sums written to the
// scratch, then added in slice order. Checked: each slice's partial sum (8 serial additions per thread + 3 tree
// levels: <= 11 kU of the slice's sum|dy|), db (64/8 + 3 + 7 = 18 additions: <= 18 kU sum|dy|, a quarter of the
// unsplit bound ceil(512/8) + 3 = 67) and the CPU twin dense_backward_cpu (<= (18 + 512) kU sum|dy|).
TEST(KernelBiasAct, NarrowLayerSplitsTheBatch) {
  const int B = 512, n = 20, kSlices = 8, kSliceRows = 64;
  std::vector<float> dy = uniform((size_t)B * n, -1.0f, 1.0f, 77);
  for (size_t i = 0; i < dy.size(); i += 31) dy[i] *= 1000.0f;  // a spread of magnitudes
  DevBuf d_dy(dy), d_db((size_t)n), scratch(CUVAE_SUM_SQUARES_PARTIALS);
  CUDA_OK(cudaMemset(scratch.p, 0xFF, CUVAE_SUM_SQUARES_PARTIALS * sizeof(float)));  // NaN until written
  CUDA_OK(bias_grad_cuda(d_dy.p, d_db.p, scratch.p, B, n, 0));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> got = d_db.get(), part = scratch.get();
  std::vector<float> x((size_t)B, 1.0f), W((size_t)n, 1.0f), dW((size_t)n), db_cpu((size_t)n), g = dy;
  dense_backward_cpu(x.data(), W.data(), nullptr, g.data(), dW.data(), db_cpu.data(), nullptr, B, 1, n,
                     CUVAE_ACT_NONE);
  double worst = 0.0;
  for (int j = 0; j < n; j++) {
    double exact = 0.0, abs_sum = 0.0;
    for (int s = 0; s < kSlices; s++) {
      double slice = 0.0, slice_abs = 0.0;
      for (int r = s * kSliceRows; r < (s + 1) * kSliceRows; r++)
        slice += dy[(size_t)r * n + j], slice_abs += fabs(dy[(size_t)r * n + j]);
      ASSERT_LE(fabs(part[(size_t)s * n + j] - slice), 11 * kU * slice_abs) << "slice " << s << " column " << j;
      exact += slice, abs_sum += slice_abs;
    }
    const double err = fabs(got[j] - exact), tol = 18 * kU * abs_sum;
    ASSERT_LE(err, tol) << "column " << j << ": gpu " << got[j] << " exact " << exact;
    ASSERT_LE(fabs((double)got[j] - db_cpu[j]), (18 + B) * kU * abs_sum) << "column " << j;
    worst = std::max(worst, err / tol);
  }
  printf("bias_grad 512 x 20: max |gpu - exact| = %.3g of its bound\n", worst);
}

TEST(KernelBiasAct, Deterministic) {
  const int B = 257, n = 1000;
  std::vector<float> y, b;
  make_forward_inputs(B, n, 5, &y, &b);
  DevBuf d_b(b), d_y1(y), d_y2(y), d_db1((size_t)n), d_db2((size_t)n), scratch(CUVAE_SUM_SQUARES_PARTIALS);
  CUDA_OK(bias_act_forward_cuda(d_y1.p, d_b.p, B, n, CUVAE_ACT_TANH, 0));
  CUDA_OK(bias_act_forward_cuda(d_y2.p, d_b.p, B, n, CUVAE_ACT_TANH, 0));
  CUDA_OK(bias_grad_cuda(d_y1.p, d_db1.p, scratch.p, B, n, 0));
  CUDA_OK(bias_grad_cuda(d_y2.p, d_db2.p, scratch.p, B, n, 0));
  CUDA_OK(cudaDeviceSynchronize());
  const std::vector<float> y1 = d_y1.get(), y2 = d_y2.get(), s1 = d_db1.get(), s2 = d_db2.get();
  EXPECT_EQ(0, memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)));
  EXPECT_EQ(0, memcmp(s1.data(), s2.data(), s1.size() * sizeof(float)));
}

TEST(KernelBiasAct, RejectsInvalidArguments) {
  DevBuf y(21), b(7), db(7), scratch(CUVAE_SUM_SQUARES_PARTIALS);
  for (cuvae_activation act : kActs) {
    EXPECT_EQ(cudaErrorInvalidValue, bias_act_forward_cuda(y.p, b.p, 0, 7, act, 0));
    EXPECT_EQ(cudaErrorInvalidValue, bias_act_forward_cuda(y.p, b.p, 3, 0, act, 0));
    EXPECT_EQ(cudaErrorInvalidValue, bias_act_forward_cuda(nullptr, b.p, 3, 7, act, 0));
    EXPECT_EQ(cudaErrorInvalidValue, bias_act_forward_cuda(y.p, nullptr, 3, 7, act, 0));
    EXPECT_EQ(cudaErrorInvalidValue, bias_act_backward_cuda(y.p, db.p, 0, 7, act, 0));
    EXPECT_EQ(cudaErrorInvalidValue, bias_act_backward_cuda(y.p, db.p, 3, -1, act, 0));
    EXPECT_EQ(cudaErrorInvalidValue, bias_act_backward_cuda(nullptr, y.p, 3, 7, act, 0));
  }
  EXPECT_EQ(cudaErrorInvalidValue, bias_grad_cuda(y.p, db.p, scratch.p, 0, 7, 0));
  EXPECT_EQ(cudaErrorInvalidValue, bias_grad_cuda(y.p, db.p, scratch.p, 3, 0, 0));
  EXPECT_EQ(cudaErrorInvalidValue, bias_grad_cuda(nullptr, db.p, scratch.p, 3, 7, 0));
  EXPECT_EQ(cudaErrorInvalidValue, bias_grad_cuda(y.p, nullptr, scratch.p, 3, 7, 0));
  EXPECT_EQ(cudaErrorInvalidValue, bias_grad_cuda(y.p, db.p, nullptr, 3, 7, 0));
  EXPECT_EQ(cudaSuccess, cudaGetLastError());  // rejected before any launch: no error left behind
}

// A layer's backward as the training graph will hold it: activation backward, then the bias gradient. Captured
// once, replayed twice on fresh inputs (copied into the same buffers), each replay equal to an eager run.
TEST(KernelBiasAct, GraphReplayEqualsEager) {
  const int B = 128, n = 400;
  std::vector<float> y, b;
  make_forward_inputs(B, n, 9, &y, &b);
  bias_act_forward_cpu(y.data(), b.data(), B, n, CUVAE_ACT_TANH);
  DevBuf d_y(y), d_g((size_t)B * n), d_db((size_t)n), e_g((size_t)B * n), e_db((size_t)n);
  DevBuf scratch(CUVAE_SUM_SQUARES_PARTIALS);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  CUDA_OK(bias_act_backward_cuda(d_y.p, d_g.p, B, n, CUVAE_ACT_TANH, stream));
  CUDA_OK(bias_grad_cuda(d_g.p, d_db.p, scratch.p, B, n, stream));
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (unsigned replay = 0; replay < 2; replay++) {
    const std::vector<float> g = uniform((size_t)B * n, -1.0f, 1.0f, 40 + replay);
    d_g.put(g);
    e_g.put(g);
    CUDA_OK(cudaGraphLaunch(exec, stream));
    CUDA_OK(bias_act_backward_cuda(d_y.p, e_g.p, B, n, CUVAE_ACT_TANH, stream));
    CUDA_OK(bias_grad_cuda(e_g.p, e_db.p, scratch.p, B, n, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    const std::vector<float> gg = d_g.get(), ge = e_g.get(), sg = d_db.get(), se = e_db.get();
    EXPECT_EQ(0, memcmp(gg.data(), ge.data(), gg.size() * sizeof(float))) << "replay " << replay;
    EXPECT_EQ(0, memcmp(sg.data(), se.data(), sg.size() * sizeof(float))) << "replay " << replay;
    std::vector<float> g_cpu = g;  // and the replay is the CPU's backward
    bias_act_backward_cpu(y.data(), g_cpu.data(), B, n, CUVAE_ACT_TANH);
    expect_close(gg, g_cpu, 0.0, 2 * kU, "dy");
  }
  CUDA_OK(cudaGraphExecDestroy(exec));
  CUDA_OK(cudaGraphDestroy(graph));
  CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace
