// src/engine/image.c: PNG grids read back with libpng and checked pixel by pixel (layout, separators, scaling, clamping),
// plots of the stated size that are not blank, the shared sample / reconstruction pictures, and the refusals of bad
// arguments and unwritable paths.
#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <string>
#include <vector>

#include "backend.h"
#include "cuvae/config.h"
#include "cuvae/error.h"
#include "cuvae/image.h"
#include "test_util.h"

using namespace cuvae_test;

namespace {

struct Png {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> px;
  uint8_t at(int x, int y, int c = 0) const { return px[((size_t)y * width + x) * channels + c]; }
};

// Reads a PNG as 8-bit grey (channels 1) or RGB (3) with libpng's simplified API; width 0 on failure.
Png read_png(const std::string &path, int channels) {
  Png p;
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str())) return p;
  img.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  p.px.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, p.px.data(), 0, nullptr)) {
    png_image_free(&img);
    return Png();
  }
  p.width = (int)img.width;
  p.height = (int)img.height;
  p.channels = channels;
  return p;
}

// The colour type byte of the IHDR chunk: 0 grey, 2 RGB.
int png_colour_type(const std::string &path) {
  const std::string b = read_file(path);
  return b.size() > 25 ? (unsigned char)b[25] : -1;
}

struct Image : ::testing::Test {
  std::string dir;
  void SetUp() override {
    dir = make_temp_dir();
    ASSERT_FALSE(dir.empty());
  }
};

TEST_F(Image, GridLayoutSeparatorsAndPixelsAreExact) {
  // 2 x 3 cells, 5 tiles of 2 x 3 pixels, scale 2: tile t pixel (i, j) has value k = 10 t + 3 i + j + 1, stored
  // as k / 255 so the byte must be exactly k.
  const int rows = 2, cols = 3, h = 2, w = 3, s = 2, n = 5;
  std::vector<float> tiles(n * h * w);
  for (int t = 0; t < n; t++)
    for (int i = 0; i < h; i++)
      for (int j = 0; j < w; j++) tiles[(t * h + i) * w + j] = (float)(10 * t + 3 * i + j + 1) / 255.0f;
  const std::string path = dir + "/grid.png";
  ASSERT_EQ(cuvae_write_grid_png(path.c_str(), tiles.data(), n, rows, cols, h, w, 1, s), 0) << cuvae_last_error();
  EXPECT_EQ(png_colour_type(path), 0);  // grey
  const Png p = read_png(path, 1);
  ASSERT_EQ(p.width, cols * (w * s + 1) + 1);  // 22
  ASSERT_EQ(p.height, rows * (h * s + 1) + 1);  // 11
  int W, H;
  cuvae_grid_size(rows, cols, h, w, s, &W, &H);
  EXPECT_EQ(W, p.width);
  EXPECT_EQ(H, p.height);
  // Separator lines: rows 0, 5, 10 and columns 0, 7, 14, 21.
  for (int x = 0; x < p.width; x++)
    for (int y : {0, 5, 10}) ASSERT_EQ(p.at(x, y), CUVAE_GRID_SEPARATOR) << x << "," << y;
  for (int y = 0; y < p.height; y++)
    for (int x : {0, 7, 14, 21}) ASSERT_EQ(p.at(x, y), CUVAE_GRID_SEPARATOR) << x << "," << y;
  // Every pixel of every tile, each a 2 x 2 square.
  for (int t = 0; t < n; t++) {
    const int r = t / cols, c = t % cols;
    for (int i = 0; i < h; i++)
      for (int j = 0; j < w; j++)
        for (int dy = 0; dy < s; dy++)
          for (int dx = 0; dx < s; dx++)
            ASSERT_EQ(p.at(1 + c * (w * s + 1) + j * s + dx, 1 + r * (h * s + 1) + i * s + dy), 10 * t + 3 * i + j + 1)
                << "tile " << t << " pixel " << i << "," << j;
  }
  // The sixth cell (row 1, column 2) has no tile: separator grey.
  for (int y = 6; y < 10; y++)
    for (int x = 15; x < 21; x++) EXPECT_EQ(p.at(x, y), CUVAE_GRID_SEPARATOR);
}

TEST_F(Image, ValuesAreClampedAndRounded) {
  const std::vector<float> v = {-0.5f, 0.0f, 0.5f, 1.0f, 1.5f, NAN, 0.2f, 1e-9f};
  const std::string path = dir + "/clamp.png";
  ASSERT_EQ(cuvae_write_grid_png(path.c_str(), v.data(), 1, 1, 1, 1, (int)v.size(), 1, 1), 0) << cuvae_last_error();
  const Png p = read_png(path, 1);
  ASSERT_EQ(p.width, (int)v.size() + 2);
  ASSERT_EQ(p.height, 3);
  const int expect[] = {0, 0, 128, 255, 255, 0, 51, 0};  // round(255 v) after clamping; NaN -> 0
  for (size_t j = 0; j < v.size(); j++) EXPECT_EQ(p.at(1 + (int)j, 1), expect[j]) << "value " << v[j];
}

TEST_F(Image, RgbTiles) {
  // One 1 x 2 RGB tile: red, then (0.2, 0.4, 0.6) * 255 = (51, 102, 153).
  const std::vector<float> v = {1, 0, 0, 0.2f, 0.4f, 0.6f};
  const std::string path = dir + "/rgb.png";
  ASSERT_EQ(cuvae_write_grid_png(path.c_str(), v.data(), 1, 1, 1, 1, 2, 3, 1), 0) << cuvae_last_error();
  EXPECT_EQ(png_colour_type(path), 2);  // RGB
  const Png p = read_png(path, 3);
  ASSERT_EQ(p.width, 4);
  ASSERT_EQ(p.height, 3);
  EXPECT_EQ(p.at(1, 1, 0), 255);
  EXPECT_EQ(p.at(1, 1, 1), 0);
  EXPECT_EQ(p.at(1, 1, 2), 0);
  EXPECT_EQ(p.at(2, 1, 0), 51);
  EXPECT_EQ(p.at(2, 1, 1), 102);
  EXPECT_EQ(p.at(2, 1, 2), 153);
  EXPECT_EQ(p.at(0, 0, 1), CUVAE_GRID_SEPARATOR);
}

TEST_F(Image, AutomaticScaleAndShape) {
  EXPECT_EQ(cuvae_grid_auto_scale(28, 28), 2);  // 56 px tiles
  EXPECT_EQ(cuvae_grid_auto_scale(1, 10), 6);
  EXPECT_EQ(cuvae_grid_auto_scale(4, 4), 14);
  EXPECT_EQ(cuvae_grid_auto_scale(64, 64), 1);
  int W, H;
  cuvae_grid_size(8, 8, 28, 28, 0, &W, &H);
  EXPECT_EQ(W, 8 * 57 + 1);
  EXPECT_EQ(H, 8 * 57 + 1);
  int h, w;
  cuvae_image_shape(784, 28, 28, &h, &w);
  EXPECT_EQ(h, 28);
  EXPECT_EQ(w, 28);
  cuvae_image_shape(784, 1, 784, &h, &w);  // flat but square
  EXPECT_EQ(h, 28);
  EXPECT_EQ(w, 28);
  cuvae_image_shape(12, 3, 4, &h, &w);
  EXPECT_EQ(h, 3);
  EXPECT_EQ(w, 4);
  cuvae_image_shape(10, 1, 10, &h, &w);
  EXPECT_EQ(h, 1);
  EXPECT_EQ(w, 10);
  EXPECT_EQ(cuvae_recon_grid_cols(32), 8);
  EXPECT_EQ(cuvae_recon_grid_cols(1), 1);
  EXPECT_EQ(cuvae_recon_grid_cols(5), 4);
}

TEST_F(Image, GridRefusesBadArguments) {
  const float v[4] = {0, 0, 0, 0};
  const std::string p = dir + "/bad.png";
  auto expect_fail = [](int rc, const char *needle) {
    EXPECT_EQ(rc, -1);
    EXPECT_NE(std::string(cuvae_last_error()).find(needle), std::string::npos) << cuvae_last_error();
  };
  expect_fail(cuvae_write_grid_png(p.c_str(), v, 1, 0, 1, 2, 2, 1, 1), "rows and cols");
  expect_fail(cuvae_write_grid_png(p.c_str(), v, 1, 1, 1, 0, 2, 1, 1), "tiles of 0 x 2");
  expect_fail(cuvae_write_grid_png(p.c_str(), v, 1, 1, 1, 2, 2, 2, 1), "2 channels");
  expect_fail(cuvae_write_grid_png(p.c_str(), v, 1, 1, 1, 2, 2, 1, -1), "scale -1");
  expect_fail(cuvae_write_grid_png(p.c_str(), v, 3, 1, 2, 1, 1, 1, 1), "3 tiles do not fit 1 x 2");
  expect_fail(cuvae_write_grid_png(p.c_str(), nullptr, 1, 1, 1, 2, 2, 1, 1), "no pixel data");
  expect_fail(cuvae_write_grid_png(p.c_str(), v, 1, 1000, 1000, 28, 28, 1, 4), "too large");
  expect_fail(cuvae_write_grid_png("", v, 1, 1, 1, 2, 2, 1, 1), "no output path");
  const std::string nowhere = dir + "/no/such/dir/x.png";
  expect_fail(cuvae_write_grid_png(nowhere.c_str(), v, 1, 1, 1, 2, 2, 1, 1), "cannot write");
  EXPECT_NE(std::string(cuvae_last_error()).find(nowhere), std::string::npos) << cuvae_last_error();
  EXPECT_NE(std::string(cuvae_last_error()).find("No such file"), std::string::npos) << cuvae_last_error();
  EXPECT_TRUE(read_file(p).empty());  // nothing written by the refusals
}

// Pixels that are not white: a plot with axes, text and data has plenty.
size_t ink(const Png &p) {
  size_t n = 0;
  for (int y = 0; y < p.height; y++)
    for (int x = 0; x < p.width; x++)
      if (p.at(x, y, 0) < 250 || p.at(x, y, 1) < 250 || p.at(x, y, 2) < 250) n++;
  return n;
}

TEST_F(Image, LinePlotHasTheStatedSize) {
  const double x[] = {1, 2, 3, 4}, a[] = {280, 260, NAN, 250}, b[] = {270, 258, 252, 249};
  const cuvae_plot_series s[2] = {{"train", x, a, 4}, {"test", x, b, 4}};
  const std::string path = dir + "/loss.png";
  ASSERT_EQ(cuvae_write_line_plot_png(path.c_str(), 640, 400, "loss", "epoch", "nats", s, 2), 0) << cuvae_last_error();
  EXPECT_EQ(png_colour_type(path), 2);
  const Png p = read_png(path, 3);
  EXPECT_EQ(p.width, 640);
  EXPECT_EQ(p.height, 400);
  EXPECT_GT(ink(p), 2000u);
  // One point, and a series with nothing finite: still a picture.
  const double one[] = {1}, nan1[] = {NAN};
  const cuvae_plot_series s1[2] = {{"a", one, one, 1}, {"b", one, nan1, 1}};
  ASSERT_EQ(cuvae_write_line_plot_png(path.c_str(), 300, 200, nullptr, nullptr, nullptr, s1, 2), 0)
      << cuvae_last_error();
  EXPECT_EQ(read_png(path, 3).width, 300);
}

TEST_F(Image, ScatterPlotHasTheStatedSize) {
  std::vector<float> x(300), y(300);
  std::vector<int32_t> labels(300);
  for (int i = 0; i < 300; i++) {
    labels[i] = i % 3 == 0 ? 7 : i % 3;  // labels 1, 2, 7
    x[i] = (float)std::cos(i * 0.1) + labels[i];
    y[i] = (float)std::sin(i * 0.37);
  }
  const char *const names[] = {"zero", "one", "two"};
  const std::string path = dir + "/scatter.png";
  ASSERT_EQ(cuvae_write_scatter_png(path.c_str(), 500, 400, "t", "x", "y", x.data(), y.data(), labels.data(), 300,
                                    names, 3),
            0)
      << cuvae_last_error();
  Png p = read_png(path, 3);
  EXPECT_EQ(p.width, 500);
  EXPECT_EQ(p.height, 400);
  EXPECT_GT(ink(p), 2000u);
  // No labels: one colour, no legend.
  ASSERT_EQ(cuvae_write_scatter_png(path.c_str(), 300, 240, nullptr, nullptr, nullptr, x.data(), y.data(), nullptr,
                                    300, nullptr, 0),
            0)
      << cuvae_last_error();
  p = read_png(path, 3);
  EXPECT_EQ(p.width, 300);
  EXPECT_EQ(p.height, 240);
}

TEST_F(Image, PlotsRefuseBadArguments) {
  const double x[] = {1}, y[] = {1};
  const cuvae_plot_series s[1] = {{"a", x, y, 1}};
  const std::string path = dir + "/p.png";
  EXPECT_EQ(cuvae_write_line_plot_png(path.c_str(), 100, 400, "", "", "", s, 1), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("100 x 400"), std::string::npos) << cuvae_last_error();
  EXPECT_EQ(cuvae_write_line_plot_png(path.c_str(), 400, 400, "", "", "", s, 0), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("0 series"), std::string::npos) << cuvae_last_error();
  const float nan2[] = {NAN, NAN}, f2[] = {1, 2};
  EXPECT_EQ(cuvae_write_scatter_png(path.c_str(), 400, 400, "", "", "", nan2, f2, nullptr, 2, nullptr, 0), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("none of the 2 points"), std::string::npos) << cuvae_last_error();
  EXPECT_EQ(cuvae_write_scatter_png(path.c_str(), 400, 400, "", "", "", f2, f2, nullptr, 0, nullptr, 0), -1);
  const std::string nowhere = dir + "/missing/p.png";
  EXPECT_EQ(cuvae_write_line_plot_png(nowhere.c_str(), 400, 400, "", "", "", s, 1), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("cannot write " + nowhere), std::string::npos) << cuvae_last_error();
  EXPECT_TRUE(read_file(path).empty());
}

TEST(ImagePrior, SamplesAreReproducibleNormals) {
  std::vector<float> a(7 * 3), b(7 * 3), c(7 * 3);
  ASSERT_EQ(cuvae_prior_samples(5, 7, 3, a.data()), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_prior_samples(5, 7, 3, b.data()), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_prior_samples(6, 7, 3, c.data()), 0) << cuvae_last_error();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  double s = 0;
  for (float v : a) s += std::fabs(v);
  EXPECT_GT(s / a.size(), 0.2);  // not all zeros
}

// The reconstruction picture through a real (CPU) backend: row 0 holds the inputs exactly, row 1 the decoded mu.
TEST_F(Image, ReconstructionPictureHoldsInputsAndReconstructions) {
  const int N = 20, D = 16, n = 3;  // 4 x 4 pictures
  std::vector<float> x = synthetic_data(N, D, 3);
  cuvae_dataset ds = {};
  ds.n = N;
  ds.dim = D;
  ds.rows = 4;
  ds.cols = 4;
  ds.x = x.data();
  cuvae_config cfg;
  cuvae_config_defaults(&cfg);
  cfg.n_hidden = 1;
  cfg.hidden[0] = 8;
  cfg.latent = 2;
  cfg.batch_size = 2;  // encode / decode work through batches of 2 rows
  cfg.eval_batch_size = 2;
  cfg.threads = 1;
  cuvae_model m;
  ASSERT_EQ(cuvae_model_build(&m, D, &cfg), 0) << cuvae_last_error();
  cuvae_backend *be = cuvae_backend_cpu_create(&m, &cfg, &ds, &ds);
  ASSERT_NE(be, nullptr) << cuvae_last_error();
  const std::string path = dir + "/recon.png";
  int W = 0, H = 0;
  ASSERT_EQ(cuvae_write_recon_png(be, &m, &ds, n, 4, 4, 1, path.c_str(), &W, &H), 0) << cuvae_last_error();
  const Png p = read_png(path, 1);
  ASSERT_EQ(p.width, W);
  ASSERT_EQ(p.height, H);
  ASSERT_EQ(W, 3 * 5 + 1);  // cuvae_recon_grid_cols(3) = 3 tiles of 4 px
  ASSERT_EQ(H, 2 * 5 + 1);
  std::vector<float> mulv(n * 4), z(n * 2), mean(n * D);
  ASSERT_EQ(be->encode(be, x.data(), NULL, n, mulv.data()), 0) << cuvae_last_error();
  for (int i = 0; i < n; i++) {
    z[i * 2] = mulv[i * 4];
    z[i * 2 + 1] = mulv[i * 4 + 1];
  }
  ASSERT_EQ(be->decode(be, z.data(), NULL, n, mean.data()), 0) << cuvae_last_error();
  auto byte = [](float v) { return v <= 0 ? 0 : v >= 1 ? 255 : (int)(v * 255.0f + 0.5f); };
  for (int t = 0; t < n; t++)
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 4; j++) {
        EXPECT_EQ(p.at(1 + t * 5 + j, 1 + i), byte(x[t * D + i * 4 + j])) << "input " << t;
        EXPECT_EQ(p.at(1 + t * 5 + j, 6 + i), byte(mean[t * D + i * 4 + j])) << "reconstruction " << t;
      }
  // Samples: n = 5 -> 3 wide, 2 high; the shape must hold the model's D.
  ASSERT_EQ(cuvae_write_samples_png(be, &m, 1, 5, 4, 4, 1, -1, path.c_str(), &W, &H), 0) << cuvae_last_error();
  EXPECT_EQ(W, 3 * 5 + 1);
  EXPECT_EQ(H, 2 * 5 + 1);
  EXPECT_EQ(read_png(path, 1).width, W);
  EXPECT_EQ(cuvae_write_samples_png(be, &m, 1, 5, 3, 4, 1, -1, path.c_str(), nullptr, nullptr), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("3 x 4"), std::string::npos) << cuvae_last_error();
  EXPECT_EQ(cuvae_write_samples_png(be, &m, 1, 0, 4, 4, 1, -1, path.c_str(), nullptr, nullptr), -1);
  EXPECT_EQ(cuvae_write_recon_png(be, &m, &ds, N + 1, 4, 4, 1, path.c_str(), nullptr, nullptr), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("the data has 20"), std::string::npos) << cuvae_last_error();
  be->destroy(be);
}

}  // namespace
