// Data loading: IDX (plain + gzip) and .npy readers, the data set loader, and their refusals of bad input.
// Every malformed file is written at runtime into a per-test temporary directory.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

extern "C" {
#include "cuvae/data.h"
#include "cuvae/error.h"
}

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<unsigned char>;

// Passes when `msg` contains every one of `subs`; on failure shows the whole message.
::testing::AssertionResult Mentions(const std::string &msg, std::initializer_list<const char *> subs) {
  for (const char *s : subs)
    if (msg.find(s) == std::string::npos)
      return ::testing::AssertionFailure() << "error message \"" << msg << "\" does not mention \"" << s << "\"";
  return ::testing::AssertionSuccess();
}

void put_be32(Bytes &b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back((unsigned char)(v >> s));
}

// An IDX file: magic (0, 0, type, ndim), big-endian dims, then the payload as given.
Bytes idx_bytes(unsigned char type, const std::vector<uint32_t> &dims, const Bytes &payload) {
  Bytes b = {0, 0, type, (unsigned char)dims.size()};
  for (uint32_t d : dims) put_be32(b, d);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

// A .npy file: the dict padded with spaces + '\n' so the data starts at a multiple of 64, as NumPy does.
Bytes npy_bytes(const std::string &dict, const void *payload, size_t payload_len, int major = 1) {
  const size_t pre = major == 1 ? 10 : 12;
  std::string h = dict;
  while ((pre + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  Bytes b = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
  const size_t n = h.size();
  b.push_back((unsigned char)(n & 0xff));
  b.push_back((unsigned char)(n >> 8));
  if (major != 1) {
    b.push_back((unsigned char)(n >> 16));
    b.push_back((unsigned char)(n >> 24));
  }
  b.insert(b.end(), h.begin(), h.end());
  const unsigned char *p = static_cast<const unsigned char *>(payload);
  b.insert(b.end(), p, p + payload_len);
  return b;
}

template <typename T>
Bytes npy_of(const std::string &descr, const std::string &shape, const std::vector<T> &v, bool fortran = false) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                     ", 'shape': " + shape + ", }";
  return npy_bytes(dict, v.data(), v.size() * sizeof(T));
}

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "cuvae_data_XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    ASSERT_NE(mkdtemp(buf.data()), nullptr);
    dir_ = buf.data();
    cuvae_clear_error();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string &name, const Bytes &b) {
    std::string p = (dir_ / name).string();
    FILE *f = std::fopen(p.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    if (f) {
      EXPECT_EQ(std::fwrite(b.data(), 1, b.size(), f), b.size());
      std::fclose(f);
    }
    return p;
  }
  // Writes b gzip-compressed with zlib.
  std::string write_gz(const std::string &name, const Bytes &b) {
    std::string p = (dir_ / name).string();
    gzFile g = gzopen(p.c_str(), "wb");
    EXPECT_NE(g, nullptr);
    if (g) {
      EXPECT_EQ(gzwrite(g, b.data(), (unsigned)b.size()), (int)b.size());
      EXPECT_EQ(gzclose(g), Z_OK);
    }
    return p;
  }
  static Bytes read(const std::string &p) {
    Bytes b;
    FILE *f = std::fopen(p.c_str(), "rb");
    if (!f) return b;
    int c;
    while ((c = std::fgetc(f)) != EOF) b.push_back((unsigned char)c);
    std::fclose(f);
    return b;
  }

  // Expects cuvae_idx_read to fail, leave the array zeroed, and return the message.
  static std::string idx_fails(const std::string &p) {
    cuvae_array a;
    std::memset(&a, 0x5a, sizeof a);
    EXPECT_EQ(cuvae_idx_read(p.c_str(), &a), -1);
    EXPECT_EQ(a.data, nullptr);
    EXPECT_EQ(a.count, 0u);
    return cuvae_last_error();
  }
  static std::string npy_fails(const std::string &p) {
    cuvae_array a;
    std::memset(&a, 0x5a, sizeof a);
    EXPECT_EQ(cuvae_npy_read(p.c_str(), &a), -1);
    EXPECT_EQ(a.data, nullptr);
    EXPECT_EQ(a.count, 0u);
    return cuvae_last_error();
  }
  // Expects cuvae_dataset_load to fail with *ds left zeroed.
  static std::string load_fails(const std::string &img, const std::string &lab) {
    cuvae_dataset ds;
    std::memset(&ds, 0x5a, sizeof ds);
    EXPECT_EQ(cuvae_dataset_load(&ds, img.c_str(), lab.c_str()), -1);
    EXPECT_EQ(ds.x, nullptr);
    EXPECT_EQ(ds.labels, nullptr);
    EXPECT_EQ(ds.n, 0u);
    EXPECT_EQ(ds.dim, 0u);
    return cuvae_last_error();
  }

  fs::path dir_;
};

// A 3 x 2 x 4 uint8 image payload 0, 7, 14, ... (mod 256) and its 3 labels.
Bytes small_pixels() {
  Bytes px(24);
  for (size_t i = 0; i < px.size(); i++) px[i] = (unsigned char)(i * 7 * 11 % 256);
  return px;
}
const Bytes kSmallLabels = {3, 0, 9};

// ---- IDX: good files ----------------------------------------------------------------------------------------

TEST_F(DataTest, IdxPlainAndGzipReadTheSameU8Array) {
  const Bytes file = idx_bytes(0x08, {3, 2, 4}, small_pixels());
  for (const std::string &p : {write("a.idx", file), write_gz("a.idx.gz", file)}) {
    cuvae_array a;
    ASSERT_EQ(cuvae_idx_read(p.c_str(), &a), 0) << cuvae_last_error();
    EXPECT_EQ(a.dtype, CUVAE_DTYPE_U8);
    ASSERT_EQ(a.ndim, 3);
    EXPECT_EQ(a.shape[0], 3u);
    EXPECT_EQ(a.shape[1], 2u);
    EXPECT_EQ(a.shape[2], 4u);
    ASSERT_EQ(a.count, 24u);
    EXPECT_EQ(std::memcmp(a.data, small_pixels().data(), 24), 0) << p;
    cuvae_array_free(&a);
    EXPECT_EQ(a.data, nullptr);
  }
}

TEST_F(DataTest, IdxInt32AndFloat32AreConvertedFromBigEndian) {
  Bytes ip;
  for (uint32_t v : {0x01020304u, 0xFFFFFFFEu /* -2 */}) put_be32(ip, v);
  cuvae_array a;
  ASSERT_EQ(cuvae_idx_read(write("i.idx", idx_bytes(0x0C, {2}, ip)).c_str(), &a), 0) << cuvae_last_error();
  ASSERT_EQ(a.dtype, CUVAE_DTYPE_I32);
  EXPECT_EQ(static_cast<int32_t *>(a.data)[0], 0x01020304);
  EXPECT_EQ(static_cast<int32_t *>(a.data)[1], -2);
  cuvae_array_free(&a);

  Bytes fp;
  for (float f : {1.5f, -2.25f, 0.1f}) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    put_be32(fp, u);
  }
  ASSERT_EQ(cuvae_idx_read(write_gz("f.idx.gz", idx_bytes(0x0D, {1, 3}, fp)).c_str(), &a), 0) << cuvae_last_error();
  ASSERT_EQ(a.dtype, CUVAE_DTYPE_F32);
  EXPECT_EQ(a.ndim, 2);
  const float *f = static_cast<float *>(a.data);
  EXPECT_EQ(f[0], 1.5f);  // bit-exact: a byte-order conversion must not change values
  EXPECT_EQ(f[1], -2.25f);
  EXPECT_EQ(f[2], 0.1f);
  cuvae_array_free(&a);
}

TEST_F(DataTest, DatasetFromIdxImagesAndGzipLabels) {
  const std::string img = write("img.idx", idx_bytes(0x08, {3, 2, 4}, small_pixels()));
  const std::string lab = write_gz("lab.idx.gz", idx_bytes(0x08, {3}, kSmallLabels));
  cuvae_dataset ds;
  ASSERT_EQ(cuvae_dataset_load(&ds, img.c_str(), lab.c_str()), 0) << cuvae_last_error();
  EXPECT_EQ(ds.n, 3u);
  EXPECT_EQ(ds.dim, 8u);
  EXPECT_EQ(ds.rows, 2u);
  EXPECT_EQ(ds.cols, 4u);
  const Bytes px = small_pixels();
  for (size_t i = 0; i < px.size(); i++) EXPECT_EQ(ds.x[i], (float)px[i] / 255.0f) << i;  // same float op: exact
  ASSERT_NE(ds.labels, nullptr);
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(ds.labels[i], kSmallLabels[i]);
  cuvae_dataset_free(&ds);
  EXPECT_EQ(ds.x, nullptr);

  // No label file (NULL or ""): labels stay NULL.
  for (const char *none : {(const char *)nullptr, ""}) {
    ASSERT_EQ(cuvae_dataset_load(&ds, img.c_str(), none), 0) << cuvae_last_error();
    EXPECT_EQ(ds.labels, nullptr);
    EXPECT_EQ(ds.n, 3u);
    cuvae_dataset_free(&ds);
  }
}

// ---- IDX: refusals ------------------------------------------------------------------------------------------

TEST_F(DataTest, MissingFileNamesPathAndReason) {
  const std::string p = (dir_ / "nope.idx").string();
  EXPECT_TRUE(Mentions(idx_fails(p), {"cannot open", p.c_str(), "No such file"}));
  EXPECT_TRUE(Mentions(npy_fails(p), {"cannot open", p.c_str(), "No such file"}));
  EXPECT_TRUE(Mentions(load_fails(p, ""), {"cannot open", p.c_str(), "No such file"}));
  // Good images but a missing label file: fails, nothing left allocated (the sanitizer build checks leaks).
  const std::string img = write("img.idx", idx_bytes(0x08, {3, 2, 4}, small_pixels()));
  EXPECT_TRUE(Mentions(load_fails(img, p), {"cannot open", p.c_str()}));
}

TEST_F(DataTest, IdxWrongMagicAndBadHeaderBytes) {
  EXPECT_TRUE(Mentions(idx_fails(write("m.idx", Bytes{'A', 'B', 'C', 'D', 0, 0, 0, 1, 5})),
                       {"m.idx", "wrong IDX magic 0x41424344"}));
  EXPECT_TRUE(Mentions(idx_fails(write("t.idx", idx_bytes(0x09, {2}, Bytes{1, 2}))), {"t.idx", "type 0x09"}));
  EXPECT_TRUE(Mentions(idx_fails(write("t.idx", idx_bytes(0x0E, {1}, Bytes(8)))), {"type 0x0E"}));
  EXPECT_TRUE(Mentions(idx_fails(write("d.idx", Bytes{0, 0, 8, 5})), {"5 dimensions"}));
  EXPECT_TRUE(Mentions(idx_fails(write("d.idx", Bytes{0, 0, 8, 0})), {"0 dimensions"}));
  EXPECT_TRUE(Mentions(idx_fails(write("s.idx", Bytes{0, 0})), {"too short"}));
  EXPECT_TRUE(Mentions(idx_fails(write("h.idx", Bytes{0, 0, 8, 2, 0, 0, 0, 1})), {"ends inside the IDX header"}));
  EXPECT_TRUE(Mentions(idx_fails(write("z.idx", idx_bytes(0x08, {3, 0}, Bytes{}))), {"zero dimension", "3 x 0"}));
}

TEST_F(DataTest, IdxHeaderAndFileSizeMustAgree) {
  Bytes px = small_pixels();  // header announces 3*2*4 = 24 bytes
  Bytes short_px(px.begin(), px.end() - 4), long_px = px;
  long_px.push_back(0);
  EXPECT_TRUE(Mentions(idx_fails(write("short.idx", idx_bytes(0x08, {3, 2, 4}, short_px))),
                       {"short.idx", "header says 24 bytes of data, file has 20"}));
  EXPECT_TRUE(Mentions(idx_fails(write("long.idx", idx_bytes(0x08, {3, 2, 4}, long_px))),
                       {"header says 24 bytes of data, file has 25"}));
  // Same with 4-byte elements: 2 int32 announced = 8 bytes.
  EXPECT_TRUE(Mentions(idx_fails(write("i.idx", idx_bytes(0x0C, {2}, Bytes(6)))),
                       {"header says 8 bytes of data, file has 6"}));
}

TEST_F(DataTest, IdxAbsurdDimensionsFailFastBeforeAllocating) {
  const auto t0 = std::chrono::steady_clock::now();
  // 4 x 2^31 = 2^33 elements announced by a 12-byte file: over CUVAE_MAX_ELEMENTS.
  EXPECT_TRUE(Mentions(idx_fails(write("abs.idx", idx_bytes(0x08, {4, 0x80000000u}, Bytes{}))),
                       {"abs.idx", "absurd dimensions", "4 x 2147483648"}));
  EXPECT_TRUE(Mentions(idx_fails(write_gz("abs.idx.gz", idx_bytes(0x0D, {4, 0x80000000u}, Bytes{1, 2, 3}))),
                       {"absurd dimensions"}));
  // Products that wrap around 64 bits must not slip through either.
  EXPECT_TRUE(Mentions(idx_fails(write("wrap.idx", idx_bytes(0x08, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, {}))),
                       {"absurd dimensions"}));
  // Within the element limit (2^31 bytes) but a tiny plain file: the size check refuses before allocating.
  EXPECT_TRUE(Mentions(idx_fails(write("big.idx", idx_bytes(0x08, {2, 0x40000000u}, Bytes{1}))),
                       {"header says 2147483648 bytes of data, file has 1"}));
  // Same announcement in a tiny gzip file: the buffer grows only as data arrives, so this is quick too.
  EXPECT_TRUE(Mentions(idx_fails(write_gz("big.idx.gz", idx_bytes(0x08, {2, 0x40000000u}, Bytes{1}))),
                       {"truncated or corrupt gzip data", "got 1 of 2147483648"}));
  // Touching gigabytes would take seconds; all of the above together should take milliseconds.
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 1.0);
}

TEST_F(DataTest, IdxTruncatedOrCorruptGzip) {
  // 10 x 28 x 28 pseudo-random pixels: poorly compressible, so a cut lands inside the deflate data.
  Bytes px(10 * 28 * 28);
  uint32_t s = 12345;
  for (auto &b : px) b = (unsigned char)((s = s * 1103515245u + 12345u) >> 24);
  const std::string good = write_gz("good.idx.gz", idx_bytes(0x08, {10, 28, 28}, px));
  const Bytes gz = read(good);
  ASSERT_GT(gz.size(), 1000u);
  cuvae_array a;
  ASSERT_EQ(cuvae_idx_read(good.c_str(), &a), 0) << cuvae_last_error();
  EXPECT_EQ(std::memcmp(a.data, px.data(), px.size()), 0);
  cuvae_array_free(&a);

  // Cut in the middle of the compressed data.
  EXPECT_TRUE(Mentions(idx_fails(write("half.idx.gz", Bytes(gz.begin(), gz.begin() + gz.size() / 2))),
                       {"half.idx.gz", "truncated or corrupt gzip data"}));
  // Cut only the 8-byte trailer (CRC32 + length): all data decompresses, but the stream is incomplete.
  EXPECT_TRUE(Mentions(idx_fails(write("notrailer.idx.gz", Bytes(gz.begin(), gz.end() - 8))),
                       {"truncated or corrupt gzip data"}));
  // A flipped CRC byte: zlib's integrity check must fail.
  Bytes bad_crc = gz;
  bad_crc[bad_crc.size() - 8] ^= 0xFF;
  EXPECT_TRUE(Mentions(idx_fails(write("crc.idx.gz", bad_crc)), {"truncated or corrupt gzip data"}));
  // Valid gzip, but the IDX payload inside has one byte more than its header announces.
  Bytes extra = px;
  extra.push_back(7);
  EXPECT_TRUE(Mentions(idx_fails(write_gz("extra.idx.gz", idx_bytes(0x08, {10, 28, 28}, extra))),
                       {"trailing data"}));
  // And one byte less.
  Bytes less(px.begin(), px.end() - 1);
  EXPECT_TRUE(Mentions(idx_fails(write_gz("less.idx.gz", idx_bytes(0x08, {10, 28, 28}, less))),
                       {"truncated or corrupt gzip data", "got 7839 of 7840"}));
}

// ---- npy: good files ----------------------------------------------------------------------------------------

TEST_F(DataTest, NpyFloat32TwoDimensional) {
  const std::vector<float> v = {0.f, 0.5f, 1.f, -3.25f, 1e-30f, 7.f};
  const std::string p = write("x.npy", npy_of("<f4", "(3, 2)", v));
  cuvae_array a;
  ASSERT_EQ(cuvae_npy_read(p.c_str(), &a), 0) << cuvae_last_error();
  EXPECT_EQ(a.dtype, CUVAE_DTYPE_F32);
  ASSERT_EQ(a.ndim, 2);
  EXPECT_EQ(a.shape[0], 3u);
  EXPECT_EQ(a.shape[1], 2u);
  EXPECT_EQ(std::memcmp(a.data, v.data(), v.size() * 4), 0);
  cuvae_array_free(&a);

  cuvae_dataset ds;
  ASSERT_EQ(cuvae_dataset_load(&ds, p.c_str(), ""), 0) << cuvae_last_error();
  EXPECT_EQ(ds.n, 3u);
  EXPECT_EQ(ds.dim, 2u);
  EXPECT_EQ(ds.rows, 1u);
  EXPECT_EQ(ds.cols, 2u);
  for (size_t i = 0; i < v.size(); i++) EXPECT_EQ(ds.x[i], v[i]);  // float32 is taken as is: bit-exact
  cuvae_dataset_free(&ds);
}

TEST_F(DataTest, NpyUint8ThreeDimensionalWithInt64Labels) {
  const Bytes px = small_pixels();
  const std::vector<unsigned char> pv(px.begin(), px.end());
  const std::string img = write("img.npy", npy_of("|u1", "(3, 2, 4)", pv));
  const std::string lab = write("lab.npy", npy_of<int64_t>("<i8", "(3,)", {3, 0, 9}));
  cuvae_dataset ds;
  ASSERT_EQ(cuvae_dataset_load(&ds, img.c_str(), lab.c_str()), 0) << cuvae_last_error();
  EXPECT_EQ(ds.n, 3u);
  EXPECT_EQ(ds.dim, 8u);
  EXPECT_EQ(ds.rows, 2u);
  EXPECT_EQ(ds.cols, 4u);
  for (size_t i = 0; i < px.size(); i++) EXPECT_EQ(ds.x[i], (float)px[i] / 255.0f) << i;
  ASSERT_NE(ds.labels, nullptr);
  EXPECT_EQ(ds.labels[0], 3);
  EXPECT_EQ(ds.labels[1], 0);
  EXPECT_EQ(ds.labels[2], 9);
  cuvae_dataset_free(&ds);

  // int32 and uint8 labels, '<u1' / 'u1' spellings, and IDX images with .npy labels.
  const std::string idx_img = write("img.idx", idx_bytes(0x08, {3, 2, 4}, px));
  const std::string l32 = write("l32.npy", npy_of<int32_t>("<i4", "(3,)", {1, 2, 2147483647}));
  const std::string lu8 = write("lu8.npy", npy_of<unsigned char>("<u1", "(3,)", {255, 0, 1}));
  const std::string lu8b = write("lu8b.npy", npy_of<unsigned char>("u1", "(3,)", {4, 5, 6}));
  ASSERT_EQ(cuvae_dataset_load(&ds, idx_img.c_str(), l32.c_str()), 0) << cuvae_last_error();
  EXPECT_EQ(ds.labels[2], 2147483647);
  cuvae_dataset_free(&ds);
  ASSERT_EQ(cuvae_dataset_load(&ds, img.c_str(), lu8.c_str()), 0) << cuvae_last_error();
  EXPECT_EQ(ds.labels[0], 255);
  cuvae_dataset_free(&ds);
  ASSERT_EQ(cuvae_dataset_load(&ds, img.c_str(), lu8b.c_str()), 0) << cuvae_last_error();
  EXPECT_EQ(ds.labels[2], 6);
  cuvae_dataset_free(&ds);
}

TEST_F(DataTest, NpyHeaderVariantsNumPyCanWrite) {
  const std::vector<float> v = {1.f, 2.f, 3.f, 4.f};
  // Version 2.0 (4-byte header length), double quotes, keys in another order, Python 2 long suffixes.
  const std::string dict = "{\"shape\": (2L, 2L), \"fortran_order\": False, \"descr\": \"<f4\"}";
  for (int major : {1, 2, 3}) {
    const std::string p = write("v.npy", npy_bytes(dict, v.data(), 16, major));
    cuvae_array a;
    ASSERT_EQ(cuvae_npy_read(p.c_str(), &a), 0) << "version " << major << ": " << cuvae_last_error();
    EXPECT_EQ(a.ndim, 2);
    EXPECT_EQ(a.shape[1], 2u);
    EXPECT_EQ(static_cast<float *>(a.data)[3], 4.f);
    cuvae_array_free(&a);
  }
  EXPECT_TRUE(Mentions(npy_fails(write("v4.npy", npy_bytes(dict, v.data(), 16, 4))), {"version 4.0"}));
}

// Each value's bytes reversed: what a big-endian ('>') .npy holds.
template <typename T>
std::vector<T> byte_swapped(std::vector<T> v) {
  for (T &x : v) {
    unsigned char b[sizeof(T)];
    std::memcpy(b, &x, sizeof b);
    std::reverse(b, b + sizeof b);
    std::memcpy(&x, b, sizeof b);
  }
  return v;
}

TEST_F(DataTest, NpyFloat64IsRoundedToNearestFloat32) {
  // NumPy's default dtype. 0.1 and 1/3 round to the nearest float; 1 + 2^-24 lies halfway between 1 and the next
  // float and rounds to even (1); 1e-50 is below float32's smallest subnormal (0); just above FLT_MAX, but nearer
  // to it than to 2^128, rounds to FLT_MAX.
  const std::vector<double> v = {0.1, -2.5, 1e-50, 3.40282356e38, 1.0 + std::ldexp(1.0, -24), 1.0 / 3.0};
  const std::vector<float> want = {0.1f, -2.5f, 0.0f, std::numeric_limits<float>::max(), 1.0f, 0.333333343f};
  const std::string p = write("d.npy", npy_of("<f8", "(2, 3)", v));
  cuvae_array a;
  ASSERT_EQ(cuvae_npy_read(p.c_str(), &a), 0) << cuvae_last_error();
  EXPECT_EQ(a.dtype, CUVAE_DTYPE_F32);
  ASSERT_EQ(a.count, 6u);
  EXPECT_EQ(a.shape[0], 2u);
  for (size_t i = 0; i < want.size(); i++) EXPECT_EQ(static_cast<const float *>(a.data)[i], want[i]) << i;
  cuvae_array_free(&a);
  cuvae_dataset ds;  // the data set loader takes it as float32 images
  ASSERT_EQ(cuvae_dataset_load(&ds, p.c_str(), ""), 0) << cuvae_last_error();
  EXPECT_EQ(ds.dim, 3u);
  for (size_t i = 0; i < want.size(); i++) EXPECT_EQ(ds.x[i], want[i]) << i;
  cuvae_dataset_free(&ds);
}

TEST_F(DataTest, NpyFloat64OutsideFloat32OrNonFiniteIsRefused) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(Mentions(npy_fails(write("o.npy", npy_of<double>("<f8", "(3,)", {1.0, -3.5e38, 2.0}))),
                       {"o.npy: element 1 is -3.5e+38, outside float32's range (magnitude at most 3.40282347e+38)"}));
  EXPECT_TRUE(Mentions(npy_fails(write("o2.npy", npy_of<double>("<f8", "(1,)", {1e300}))), {"element 0 is 1e+300"}));
  // Halfway between FLT_MAX and 2^128: the tie rounds to even, which is 2^128, so it overflows.
  const double halfway = (double)std::numeric_limits<float>::max() + std::ldexp(1.0, 103);
  EXPECT_TRUE(Mentions(npy_fails(write("o3.npy", npy_of<double>("<f8", "(2,)", {0.0, halfway}))),
                       {"element 1 is 3.40282357e+38, outside float32's range"}));
  EXPECT_TRUE(Mentions(npy_fails(write("n.npy", npy_of<double>("<f8", "(2,)", {0.0, std::nan("")}))),
                       {"n.npy: element 1 is NaN"}));
  EXPECT_TRUE(Mentions(npy_fails(write("i.npy", npy_of<double>(">f8", "(1,)", byte_swapped<double>({-inf})))),
                       {"element 0 is -Inf"}));
}

TEST_F(DataTest, NpyBigEndianFloats) {
  const std::vector<float> f = {0.5f, -1.25f, 3e-3f, 1e30f};
  const std::vector<double> d = {0.5, -1.25, 3e-3, 1e30};
  for (const auto &[name, bytes] : {std::pair<std::string, Bytes>{"f4.npy", npy_of(">f4", "(2, 2)", byte_swapped(f))},
                                    std::pair<std::string, Bytes>{"f8.npy", npy_of(">f8", "(2, 2)", byte_swapped(d))}}) {
    cuvae_array a;
    ASSERT_EQ(cuvae_npy_read(write(name, bytes).c_str(), &a), 0) << name << ": " << cuvae_last_error();
    EXPECT_EQ(a.dtype, CUVAE_DTYPE_F32);
    ASSERT_EQ(a.count, 4u);
    for (size_t i = 0; i < f.size(); i++) EXPECT_EQ(static_cast<const float *>(a.data)[i], f[i]) << name << " " << i;
    cuvae_array_free(&a);
  }
  // A big-endian NaN is found after the byte swap.
  EXPECT_TRUE(Mentions(npy_fails(write("nan.npy", npy_of(">f4", "(2,)", byte_swapped<float>({1.f, NAN})))),
                       {"element 1 is NaN"}));
}

TEST_F(DataTest, NpyFloat16IsExact) {
  // Half-precision bit patterns: 0, 0.5, the largest half (65504), the smallest negative subnormal (-2^-24), and
  // the half nearest 1/3 (0x3555 = 1365/4096).
  const std::vector<uint16_t> h = {0x0000, 0x3800, 0x7BFF, 0x8001, 0x3555};
  const std::vector<float> want = {0.0f, 0.5f, 65504.0f, -std::ldexp(1.0f, -24), 1365.0f / 4096.0f};
  cuvae_array a;
  ASSERT_EQ(cuvae_npy_read(write("h.npy", npy_of("<f2", "(1, 5)", h)).c_str(), &a), 0) << cuvae_last_error();
  EXPECT_EQ(a.dtype, CUVAE_DTYPE_F32);
  for (size_t i = 0; i < want.size(); i++) EXPECT_EQ(static_cast<const float *>(a.data)[i], want[i]) << i;
  cuvae_array_free(&a);
  EXPECT_TRUE(Mentions(npy_fails(write("hi.npy", npy_of<uint16_t>("<f2", "(2,)", {0x3C00, 0xFC00}))),
                       {"element 1 is -Inf"}));
}

TEST_F(DataTest, NpyIntegerDtypesConvertExactly) {
  // Small integers become int32 (sign-extended), u4 / i8 / u8 int64; either byte order.
  cuvae_array a;
  ASSERT_EQ(cuvae_npy_read(write("i1.npy", npy_of<int8_t>("|i1", "(3,)", {-128, 127, -1})).c_str(), &a), 0);
  EXPECT_EQ(a.dtype, CUVAE_DTYPE_I32);
  EXPECT_EQ(static_cast<const int32_t *>(a.data)[0], -128);
  EXPECT_EQ(static_cast<const int32_t *>(a.data)[2], -1);
  cuvae_array_free(&a);
  ASSERT_EQ(cuvae_npy_read(write("i2.npy", npy_of(">i2", "(2,)", byte_swapped<int16_t>({-300, 32767}))).c_str(), &a),
            0);
  EXPECT_EQ(a.dtype, CUVAE_DTYPE_I32);
  EXPECT_EQ(static_cast<const int32_t *>(a.data)[0], -300);
  EXPECT_EQ(static_cast<const int32_t *>(a.data)[1], 32767);
  cuvae_array_free(&a);
  ASSERT_EQ(cuvae_npy_read(write("u4.npy", npy_of<uint32_t>("<u4", "(1,)", {4000000000u})).c_str(), &a), 0);
  EXPECT_EQ(a.dtype, CUVAE_DTYPE_I64);
  EXPECT_EQ(static_cast<const int64_t *>(a.data)[0], 4000000000LL);
  cuvae_array_free(&a);
  EXPECT_TRUE(Mentions(npy_fails(write("u8.npy", npy_of(">u8", "(2,)", byte_swapped<uint64_t>({1, 1ull << 63})))),
                       {"u8.npy: element 1 is 9223372036854775808, too large for int64"}));

  // As labels: u2 and big-endian i8 load; a negative i1 label is refused by the label rule; integer images are not
  // pixels.
  const Bytes px = small_pixels();
  const std::string img = write("img.idx", idx_bytes(0x08, {3, 2, 4}, px));
  cuvae_dataset ds;
  ASSERT_EQ(cuvae_dataset_load(&ds, img.c_str(), write("u2.npy", npy_of<uint16_t>("<u2", "(3,)", {1, 65535, 3})).c_str()),
            0) << cuvae_last_error();
  EXPECT_EQ(ds.labels[1], 65535);
  cuvae_dataset_free(&ds);
  ASSERT_EQ(cuvae_dataset_load(&ds, img.c_str(),
                               write("i8.npy", npy_of(">i8", "(3,)", byte_swapped<int64_t>({7, 0, 1LL << 30}))).c_str()),
            0) << cuvae_last_error();
  EXPECT_EQ(ds.labels[0], 7);
  EXPECT_EQ(ds.labels[2], 1 << 30);
  cuvae_dataset_free(&ds);
  EXPECT_TRUE(Mentions(load_fails(img, write("neg.npy", npy_of<int8_t>("|i1", "(3,)", {0, 1, -2}))), {"label 2 is -2"}));
  EXPECT_TRUE(Mentions(load_fails(write("i2img.npy", npy_of<int16_t>("<i2", "(2, 2)", {1, 2, 3, 4})), ""),
                       {"int32 image data is not supported"}));
}

// ---- npy: refusals ------------------------------------------------------------------------------------------

TEST_F(DataTest, NpyNonFiniteValuesNameTheFirstBadIndex) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::string pn = write("x.npy", npy_of<float>("<f4", "(2, 3)", {0.f, 1.f, 2.f, 3.f, nan, inf}));
  EXPECT_TRUE(Mentions(npy_fails(pn), {"x.npy: element 4 is NaN"}));
  EXPECT_TRUE(Mentions(load_fails(pn, ""), {"element 4 is NaN"}));
  const std::string pi = write("y.npy", npy_of<float>("<f4", "(2, 3)", {0.f, -inf, 2.f, nan, 4.f, 5.f}));
  EXPECT_TRUE(Mentions(npy_fails(pi), {"y.npy: element 1 is -Inf"}));
  const std::string pp = write("z.npy", npy_of<float>("<f4", "(2, 2)", {0.f, 0.f, 0.f, inf}));
  EXPECT_TRUE(Mentions(npy_fails(pp), {"element 3 is +Inf"}));

  // IDX float32 goes through the same finiteness rule when loaded as a data set.
  Bytes fp;
  for (float f : {1.f, nan}) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    put_be32(fp, u);
  }
  EXPECT_TRUE(Mentions(load_fails(write("f.idx", idx_bytes(0x0D, {1, 2}, fp)), ""), {"element 1 is NaN"}));
}

TEST_F(DataTest, NpyRefusesLayoutsAndDtypesItCannotUse) {
  const std::vector<float> v = {1.f, 2.f, 3.f, 4.f};
  EXPECT_TRUE(Mentions(npy_fails(write("f.npy", npy_of("<f4", "(2, 2)", v, true))), {"f.npy", "fortran_order"}));
  EXPECT_TRUE(Mentions(npy_fails(write("c.npy", npy_of<double>("<c8", "(2,)", {1.0, 2.0}))),
                       {"c.npy", "unsupported .npy dtype '<c8'"}));
  EXPECT_TRUE(Mentions(npy_fails(write("b.npy", npy_of("|b1", "(16,)", v))), {"'|b1'"}));
  EXPECT_TRUE(Mentions(npy_fails(write("f16.npy", npy_of("<f16", "(1,)", v))), {"'<f16'"}));
  EXPECT_TRUE(Mentions(npy_fails(write("u.npy", npy_of("<U1", "(4,)", v))), {"'<U1'"}));
  EXPECT_TRUE(Mentions(npy_fails(write("p.npy", npy_of("|f4", "(4,)", v))), {"'|f4'"}));  // no byte order: refused
  EXPECT_TRUE(Mentions(npy_fails(write("s.npy", npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, "
                                                          "'shape': (4,)}", v.data(), 16))),
                       {"structured"}));
  EXPECT_TRUE(Mentions(npy_fails(write("n5.npy", npy_of("<f4", "(1, 1, 1, 2, 2)", v))), {"more than 4"}));
  EXPECT_TRUE(Mentions(npy_fails(write("n0.npy", npy_of<float>("<f4", "()", {1.f}))), {"0-d"}));
  EXPECT_TRUE(Mentions(npy_fails(write("e.npy", npy_of<float>("<f4", "(0, 3)", {}))), {"zero dimension"}));
}

TEST_F(DataTest, NpySizeChecksAndMalformedHeaders) {
  const std::vector<float> v = {1.f, 2.f, 3.f, 4.f, 5.f};
  EXPECT_TRUE(Mentions(npy_fails(write("short.npy", npy_of("<f4", "(2, 3)", v))),
                       {"short.npy", "header says 24 bytes of data, file has 20"}));
  EXPECT_TRUE(Mentions(npy_fails(write("long.npy", npy_of("<f4", "(2, 2)", v))),
                       {"header says 16 bytes of data, file has 20"}));
  EXPECT_TRUE(Mentions(npy_fails(write("abs.npy", npy_of("<f4", "(4, 2147483648)", v))),
                       {"absurd dimensions", "4 x 2147483648"}));
  EXPECT_TRUE(Mentions(npy_fails(write("huge.npy", npy_of("<f4", "(99999999999999999999999, 1)", v))),
                       {"absurd dimensions"}));
  EXPECT_TRUE(Mentions(npy_fails(write("magic.npy", Bytes{0x93, 'N', 'U', 'M', 'P', 'X', 1, 0, 0, 0})),
                       {"not a .npy file"}));
  Bytes cut = npy_of("<f4", "(5,)", v);
  cut.resize(30);  // ends inside the header
  EXPECT_TRUE(Mentions(npy_fails(write("cut.npy", cut)), {"header length"}));
  const char *bad_dicts[] = {
      "{'descr': '<f4', 'fortran_order': False}",                                // no shape
      "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), 'x': 1}",         // unknown key
      "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (5,)}",  // duplicate key
      "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (5,)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (5, -1)}",
      "{'descr': '<f4', 'fortran_order': False, 'shape': (5,)} junk",
      "{'descr: '<f4', 'fortran_order': False, 'shape': (5,)}",
      "['descr', '<f4']",
  };
  for (const char *d : bad_dicts)
    EXPECT_TRUE(Mentions(npy_fails(write("m.npy", npy_bytes(d, v.data(), 20))), {"m.npy", "malformed .npy header"}))
        << d;
}

// ---- data set rules -----------------------------------------------------------------------------------------

TEST_F(DataTest, DatasetRefusesBadImagesAndLabels) {
  const Bytes px = small_pixels();
  const std::string img = write("img.idx", idx_bytes(0x08, {3, 2, 4}, px));
  // Label count must match the number of examples; the message gives both counts and both files.
  const std::string two = write("two.idx", idx_bytes(0x08, {2}, Bytes{1, 2}));
  EXPECT_TRUE(Mentions(load_fails(img, two), {"two.idx has 2 labels", "img.idx has 3 examples"}));
  // Labels: 1-D integer, non-negative, fitting int32.
  EXPECT_TRUE(Mentions(load_fails(img, write("neg.npy", npy_of<int32_t>("<i4", "(3,)", {0, -1, 2}))),
                       {"neg.npy", "label 1 is -1"}));
  EXPECT_TRUE(Mentions(load_fails(img, write("big.npy", npy_of<int64_t>("<i8", "(3,)", {0, 1, 1LL << 31}))),
                       {"label 2 is 2147483648"}));
  EXPECT_TRUE(Mentions(load_fails(img, write("l2.idx", idx_bytes(0x08, {3, 1}, Bytes{1, 2, 3}))), {"1-D"}));
  EXPECT_TRUE(Mentions(load_fails(img, write("lf.npy", npy_of<float>("<f4", "(3,)", {1, 2, 3}))),
                       {"float32 labels"}));
  // Images: at least 2 dims, no integer image data.
  EXPECT_TRUE(Mentions(load_fails(write("one.idx", idx_bytes(0x08, {5}, Bytes(5))), ""), {"at least 2 dimensions"}));
  EXPECT_TRUE(Mentions(load_fails(write("i.npy", npy_of<int32_t>("<i4", "(2, 2)", {1, 2, 3, 4})), ""),
                       {"i.npy", "int32 image data"}));
  EXPECT_TRUE(Mentions(load_fails(write("l.npy", npy_of<int64_t>("<i8", "(2, 1)", {1, 2})), ""),
                       {"int64 image data"}));
  EXPECT_TRUE(Mentions(load_fails("", ""), {"no image file"}));
}

TEST_F(DataTest, FourDimensionalImagesFlattenTrailingDims) {
  const std::vector<unsigned char> v(2 * 1 * 3 * 2, 255);
  cuvae_dataset ds;
  ASSERT_EQ(cuvae_dataset_load(&ds, write("c.npy", npy_of("|u1", "(2, 1, 3, 2)", v)).c_str(), nullptr), 0)
      << cuvae_last_error();
  EXPECT_EQ(ds.n, 2u);
  EXPECT_EQ(ds.dim, 6u);
  EXPECT_EQ(ds.rows, 1u);  // not (n, rows, cols): rows = 1, cols = dim
  EXPECT_EQ(ds.cols, 6u);
  EXPECT_EQ(ds.x[5], 1.0f);  // 255 / 255 is exactly 1
  cuvae_dataset_free(&ds);
}

// ---- the real data ------------------------------------------------------------------------------------------

TEST(FashionMnist, TestSplitLoads) {
  const std::string dir = "/usr/share/datasets/fashion-mnist/";
  const std::string img = dir + "t10k-images-idx3-ubyte.gz", lab = dir + "t10k-labels-idx1-ubyte.gz";
  if (!fs::exists(img) || !fs::exists(lab)) GTEST_SKIP() << "Fashion-MNIST not installed at " << dir;
  cuvae_dataset ds;
  ASSERT_EQ(cuvae_dataset_load(&ds, img.c_str(), lab.c_str()), 0) << cuvae_last_error();
  ASSERT_EQ(ds.n, 10000u);
  ASSERT_EQ(ds.dim, 784u);
  EXPECT_EQ(ds.rows, 28u);
  EXPECT_EQ(ds.cols, 28u);
  ASSERT_NE(ds.labels, nullptr);

  // Known split facts: 1000 examples per class; the first ten labels (from Python's gzip module).
  int per_class[10] = {0};
  for (size_t i = 0; i < ds.n; i++) {
    ASSERT_GE(ds.labels[i], 0);
    ASSERT_LE(ds.labels[i], 9);
    per_class[ds.labels[i]]++;
  }
  for (int c = 0; c < 10; c++) EXPECT_EQ(per_class[c], 1000) << "class " << c;
  const int first[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
  for (int i = 0; i < 10; i++) EXPECT_EQ(ds.labels[i], first[i]);

  // Pixels: in [0,1], each exactly some k/255. Summing round(x*255) recovers the raw byte sum exactly, which
  // was measured independently with Python's gzip module: 573469082 (so mean = 573469082 / (7840000 * 255)).
  double sum = 0.0;
  int64_t byte_sum = 0;
  for (size_t i = 0; i < ds.n * ds.dim; i++) {
    const float x = ds.x[i];
    ASSERT_GE(x, 0.0f);
    ASSERT_LE(x, 1.0f);
    sum += x;
    byte_sum += std::lrint(x * 255.0f);
  }
  EXPECT_EQ(byte_sum, 573469082);
  // Mean pixel: exact value 0.286849280712...; each float k/255 carries a relative rounding error <= 2^-24
  // (6e-8), so the mean of them is within 0.287 * 6e-8 = 1.7e-8 of exact (double summation adds ~1e-12).
  EXPECT_NEAR(sum / (double)(ds.n * ds.dim), 0.28684928071228494, 2e-8);
  cuvae_dataset_free(&ds);
}

}  // namespace
