// Helpers shared by the tests: temp directories, small .npy writers, whole-file reads.
#pragma once
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace cuvae_test {

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

}  // namespace cuvae_test
