// Helpers shared by the tests: temp directories, small .npy writers, whole-file reads, running a command line.
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuvae/model.h"

namespace cuvae_test {

// Sets (or unsets, value == nullptr) an environment variable for one scope; restores what it was after.
class EnvGuard {
 public:
  EnvGuard(const char *name, const char *value) : name_(name) {
    const char *old = getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~EnvGuard() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }
  EnvGuard(const EnvGuard &) = delete;
  EnvGuard &operator=(const EnvGuard &) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

// The parameter layout's contract (include/cuvae/model.h): the tensors cover [0, n_params) without overlap, every
// layer's weight block and bias block and the buffer's length are multiples of CUVAE_TENSOR_ALIGN floats, the
// second head of a two-head layer follows the first without a gap, and the uncovered floats are the alignment gaps
// alone (each gap shorter than CUVAE_TENSOR_ALIGN, n_params - n_values of them in all).
// The floats of the parameter buffer that no tensor covers: the alignment gaps.
inline std::vector<size_t> GapPositions(const cuvae_model &m) {
  std::vector<char> covered(m.n_params, 0);
  for (int t = 0; t < m.n_tensors; t++)
    for (size_t i = 0; i < m.tensors[t].count; i++) covered[m.tensors[t].offset + i] = 1;
  std::vector<size_t> gaps;
  for (size_t i = 0; i < m.n_params; i++)
    if (!covered[i]) gaps.push_back(i);
  return gaps;
}

// The gaps of a buffer with the model's layout (parameters, gradient, Adam moments) hold +0 exactly: nothing writes
// them, their gradient is zero, and Adam maps (0, 0, 0) to 0.
inline void ExpectGapsZero(const cuvae_model &m, const std::vector<float> &buf, const char *what) {
  ASSERT_EQ(buf.size(), m.n_params) << what;
  for (size_t i : GapPositions(m)) {
    ASSERT_EQ(std::memcmp(&buf[i], "\0\0\0\0", 4), 0) << what << ": gap float " << i << " is " << buf[i];
  }
}

inline void ExpectAlignedTiling(const cuvae_model &m) {
  std::vector<int> cover(m.n_params, 0);
  size_t values = 0;
  for (int t = 0; t < m.n_tensors; t++) {
    ASSERT_LE(m.tensors[t].offset + m.tensors[t].count, m.n_params) << m.tensors[t].name;
    for (size_t i = 0; i < m.tensors[t].count; i++) cover[m.tensors[t].offset + i]++;
    values += m.tensors[t].count;
  }
  EXPECT_EQ(values, m.n_values);
  EXPECT_EQ(m.n_params % CUVAE_TENSOR_ALIGN, 0u);
  size_t gap = 0, gaps = 0;
  for (size_t i = 0; i < m.n_params; i++) {
    ASSERT_LE(cover[i], 1) << "parameter " << i << " covered " << cover[i] << " times";
    gap = cover[i] ? 0 : gap + 1;
    gaps += cover[i] ? 0 : 1;
    ASSERT_LT(gap, CUVAE_TENSOR_ALIGN) << "a gap longer than the alignment ends at " << i;
  }
  EXPECT_EQ(gaps, m.n_params - m.n_values);
  const cuvae_layer *layers[2] = {m.enc, m.dec};
  const int counts[2] = {m.n_enc, m.n_dec};
  for (int s = 0; s < 2; s++)
    for (int i = 0; i < counts[s]; i++) {
      EXPECT_EQ(layers[s][i].w % CUVAE_TENSOR_ALIGN, 0u) << (s ? "dec " : "enc ") << i;
      EXPECT_EQ(layers[s][i].b % CUVAE_TENSOR_ALIGN, 0u) << (s ? "dec " : "enc ") << i;
    }
  for (int t = 0; t + 1 < m.n_tensors; t++) {  // two heads: X.lv.weight right after its partner's weight
    const std::string name = m.tensors[t + 1].name;
    if (name == "enc.lv.weight" || name == "enc.lv.bias" || name == "dec.lv.weight" || name == "dec.lv.bias") {
      EXPECT_EQ(m.tensors[t + 1].offset, m.tensors[t].offset + m.tensors[t].count) << name;
    }
  }
}

inline std::string make_temp_dir() {
  std::string tmpl = ::testing::TempDir() + "cuvae_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return "";
  return std::string(buf.data());
}

inline void write_file(const std::string &path, const std::string &bytes) {
  FILE *f = fopen(path.c_str(), "wb");
  if (!f) return;
  fwrite(bytes.data(), 1, bytes.size(), f);
  fclose(f);
}

// The lines of text without their '\n'; a last line without one is kept, marked " <- no newline".
inline std::vector<std::string> split_lines(const std::string &text) {
  std::vector<std::string> out;
  size_t start = 0, nl;
  while ((nl = text.find('\n', start)) != std::string::npos) {
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  if (start < text.size()) out.push_back(text.substr(start) + " <- no newline");
  return out;
}

inline std::string read_file(const std::string &path) {
  std::string out;
  FILE *f = fopen(path.c_str(), "rb");
  if (!f) return out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  fclose(f);
  return out;
}

// A NumPy v1.0 .npy file: descr e.g. "<f4", shape e.g. "(256, 16)".
inline std::string npy_bytes(const std::string &descr, const std::string &shape, const void *data, size_t nbytes) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  uint16_t len = (uint16_t)header.size();
  out.push_back((char)(len & 0xff));
  out.push_back((char)(len >> 8));
  out += header;
  out.append((const char *)data, nbytes);
  return out;
}

// n x d floats in [0, 1], a smooth deterministic pattern (no RNG needed).
inline std::vector<float> synthetic_data(size_t n, size_t d, unsigned salt) {
  std::vector<float> x(n * d);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < d; j++) {
      unsigned h = (unsigned)(i * 2654435761u) ^ (unsigned)(j * 40503u) ^ (salt * 97u);
      h ^= h >> 13;
      h *= 0x5bd1e995u;
      h ^= h >> 15;
      x[i * d + j] = (float)(h % 1000u) / 999.0f;
    }
  return x;
}

// DIR/train.npy (n_train x d) and DIR/test.npy (n_test x d) of synthetic_data, and the [data] section that names
// them (the start of a small run's config).
inline std::string write_synthetic_sets(const std::string &dir, size_t n_train, size_t n_test, size_t d) {
  std::vector<float> tr = synthetic_data(n_train, d, 1), te = synthetic_data(n_test, d, 2);
  const std::string shape = ", " + std::to_string(d) + ")";
  write_file(dir + "/train.npy", npy_bytes("<f4", "(" + std::to_string(n_train) + shape, tr.data(), tr.size() * 4));
  write_file(dir + "/test.npy", npy_bytes("<f4", "(" + std::to_string(n_test) + shape, te.data(), te.size() * 4));
  return "[data]\ndataset =\ntrain_images = " + dir + "/train.npy\ntest_images = " + dir + "/test.npy\n";
}

struct Result {
  int code;           // exit status; -1 when killed by a signal
  std::string out;    // stdout and stderr together
};

// A shell command line, its output and exit status.
inline Result run_shell(const std::string &line) {
  std::string cmd = line + " 2>&1";
  FILE *p = popen(cmd.c_str(), "r");
  Result r{-1, ""};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

}  // namespace cuvae_test
