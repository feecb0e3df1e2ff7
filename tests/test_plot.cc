// src/engine/plot.c and src/io/jsonl.c: a run's rows read into the panels and series it draws (keys left out when
// absent, x = step / steps_per_epoch, replaced epochs), the PNG's size and ink in each panel, and `cuvae plot`'s
// messages and exit codes for every bad input.
#include <gtest/gtest.h>
#include <png.h>
#include <sys/stat.h>

#include <cmath>
#include <string>
#include <vector>

#include "cuvae/error.h"
#include "cuvae/plot.h"
#include "jsonl.h"
#include "test_util.h"

using namespace cuvae_test;

namespace {

struct Field {
  std::string key;
  int kind;  // a cuvae_jsonl_kind, or -1 for a parse error (not a value of the enum: kept as int)
  double value;
};

int collect(void *ctx, const char *key, cuvae_jsonl_kind kind, double value) {
  static_cast<std::vector<Field> *>(ctx)->push_back({key, (int)kind, value});
  return 0;
}

// The fields of a row, or the parse error as the only field's key (kind -1).
std::vector<Field> parse(const std::string &line) {
  std::vector<Field> f;
  if (cuvae_jsonl_parse(line.c_str(), collect, &f)) return {{cuvae_last_error(), -1, 0}};
  return f;
}

TEST(Jsonl, ReadsAFlatRowWithPrintfsNonFiniteNumbers) {
  const auto f = parse("{\"epoch\": 3, \"x\": -1.5e2, \"ok\": true, \"no\": false, \"n\": null, \"s\": \"a\\\"b\\u0041\", "
                       "\"nan\": nan, \"m\": -nan, \"inf\": inf, \"ninf\": -inf, \"k\\u0065y\": 0.25}\r\n");
  ASSERT_EQ(f.size(), 11u) << f[0].key;
  EXPECT_EQ(f[0].key, "epoch");
  EXPECT_EQ(f[0].value, 3.0);
  EXPECT_EQ(f[1].value, -150.0);
  EXPECT_EQ(f[2].kind, CUVAE_JSONL_BOOL);
  EXPECT_EQ(f[2].value, 1.0);
  EXPECT_EQ(f[3].value, 0.0);
  EXPECT_EQ(f[4].kind, CUVAE_JSONL_NULL);
  EXPECT_EQ(f[5].kind, CUVAE_JSONL_STRING);
  EXPECT_TRUE(std::isnan(f[6].value));
  EXPECT_TRUE(std::isnan(f[7].value));
  EXPECT_EQ(f[8].value, INFINITY);
  EXPECT_EQ(f[9].value, -INFINITY);
  EXPECT_EQ(f[10].key, "key");
  EXPECT_EQ(f[10].value, 0.25);
  EXPECT_TRUE(parse("  {}  ").empty());
}

TEST(Jsonl, RefusesMalformedRowsNamingTheColumn) {
  const struct {
    const char *line, *message;
  } cases[] = {
      {"", "column 1: expected '{' (a row is one JSON object), found the end of the line"},
      {"[1]", "column 1: expected '{'"},
      {"{\"a\": 1,}", "column 9: expected '\"', found '}'"},
      {"{\"a\" 1}", "column 6: expected ':' after the key"},
      {"{\"a\": 1 \"b\": 2}", "column 9: expected ',' or '}'"},
      {"{\"a\": {\"b\": 1}}", "column 7: a nested object"},
      {"{\"a\": [1]}", "column 7: a nested array"},
      {"{\"a\": 1.}", "column 9: expected a digit after '.'"},
      {"{\"a\": 1e}", "column 9: expected a digit in the exponent"},
      {"{\"a\": tru}", "column 7: expected a value"},
      {"{\"a\": \"b}", "expected the closing '\"' of a string"},
      {"{\"a\": \"\\x\"}", "column 9: expected an escape"},
      {"{\"a\": 1} x", "column 10: expected the end of the line after the row's '}'"},
      {"{\"a\": 1", "column 8: expected ',' or '}', found the end of the line"},
  };
  for (const auto &c : cases) {
    const auto f = parse(c.line);
    ASSERT_EQ(f.size(), 1u) << c.line;
    EXPECT_EQ(f[0].kind, -1) << c.line;
    EXPECT_NE(f[0].key.find(c.message), std::string::npos) << c.line << " -> " << f[0].key;
  }
  EXPECT_NE(parse("{\"" + std::string(CUVAE_JSONL_KEY_MAX + 1, 'k') + "\": 1}")[0].key.find("a key longer than"),
            std::string::npos);
}

// A metrics row with the keys of every panel (values are simple functions of e, so each curve is known).
std::string full_row(int e, long step, bool complete) {
  char b[1024];
  snprintf(b, sizeof b,
           "{\"epoch\": %d, \"step\": %ld, \"train_nelbo\": %d, \"train_recon\": %d, \"train_kl\": %d, "
           "\"train_objective\": 1, \"test_nelbo\": %d, \"recon\": %d, \"kl\": %d, \"samples_per_s\": 9.5, "
           "\"seconds\": 1.0, \"complete\": %s, \"lr\": %g, \"grad_norm\": %d, \"grad_norm_max\": %d, \"skipped\": %d, "
           "\"val_nelbo\": %d, \"val_recon\": 1, \"val_kl\": 2, \"ema_test_nelbo\": %d, \"ema_val_nelbo\": %d, "
           "\"active_units\": 4}\n",
           e, step, 300 - 10 * e, 280 - 10 * e, 20 + e, 305 - 9 * e, 285 - 9 * e, 30 - e, complete ? "true" : "false",
           1e-3 / e, 50 - e, 80 - e, e % 3, 303 - 9 * e, 304 - 9 * e, 302 - 9 * e);
  return b;
}

struct Plot : ::testing::Test {
  std::string dir;
  cuvae_run_curves c{};
  void SetUp() override {
    dir = make_temp_dir();
    ASSERT_FALSE(dir.empty());
  }
  void TearDown() override { cuvae_run_curves_free(&c); }
  // Six complete epochs of 10 steps, then epoch 7 cut at step 65; steps.jsonl every step when with_steps.
  void write_full_run(bool with_steps) {
    std::string m;
    for (int e = 1; e <= 6; e++) m += full_row(e, 10L * e, true);
    m += full_row(7, 65, false);
    write_file(dir + "/metrics.jsonl", m);
    std::string s;
    for (int t = 1; with_steps && t <= 65; t++)
      s += "{\"step\": " + std::to_string(t) + ", \"epoch\": " + std::to_string((t - 1) / 10 + 1) +
           ", \"nelbo\": 1, \"grad_norm\": " + std::to_string(60 - 0.5 * t) + ", \"lr\": " +
           std::to_string(1e-3 * t / 65) + ", \"skipped\": 0}\n";
    if (with_steps) write_file(dir + "/steps.jsonl", s);
  }
  // "title:key,key|title:..." of the panels chosen (steps.jsonl's keys as steps.KEY).
  std::string layout() const {
    std::string out;
    for (int p = 0; p < c.n_panels; p++) {
      out += std::string(p ? "|" : "") + c.panels[p].title + ":";
      for (int s = 0; s < c.panels[p].n_series; s++)
        out += std::string(s ? "," : "") + (c.panels[p].per_step[s] ? "steps." : "") + c.panels[p].keys[s];
    }
    return out;
  }
};

TEST_F(Plot, EveryPanelAndSeriesOfAFullRun) {
  write_full_run(true);
  ASSERT_EQ(cuvae_run_curves_read(dir.c_str(), &c), 0) << cuvae_last_error();
  EXPECT_EQ(layout(),
            "negative ELBO:train_nelbo,val_nelbo,test_nelbo,ema_val_nelbo,ema_test_nelbo|"
            "reconstruction:train_recon,val_recon,recon|KL:train_kl,val_kl,kl|learning rate:steps.lr|"
            "gradient norm:steps.grad_norm,grad_norm_max|skipped steps:skipped");
  EXPECT_EQ(c.steps_per_epoch, 10);
  EXPECT_STREQ(c.xlabel, "epoch");
  EXPECT_EQ(c.n_rows, 7u);
  EXPECT_EQ(c.n_step_rows, 65u);
  // x = step / steps_per_epoch: whole epochs, then the cut epoch at 65 / 10; the y values are the rows' own.
  const cuvae_plot_series &test = c.panels[0].series[2];
  ASSERT_EQ(test.n, 7u);
  for (int e = 1; e <= 6; e++) {
    EXPECT_EQ(test.x[e - 1], (double)e);
    EXPECT_EQ(test.y[e - 1], 305.0 - 9 * e);
  }
  EXPECT_EQ(test.x[6], 6.5);
  const cuvae_plot_series &gn = c.panels[4].series[0];
  ASSERT_EQ(gn.n, 65u);
  EXPECT_EQ(gn.x[0], 0.1);
  EXPECT_EQ(gn.y[0], 59.5);
  EXPECT_EQ(gn.x[64], 6.5);
}

TEST_F(Plot, KeysAbsentFromEveryRowAreLeftOut) {
  // The rows of a run before validation, EMA, schedules and skipping: three panels of train and test.
  write_file(dir + "/metrics.jsonl",
             "{\"epoch\": 1, \"step\": 4, \"train_nelbo\": 9, \"train_recon\": 8, \"train_kl\": 1, \"test_nelbo\": 9.5, "
             "\"recon\": 8.5, \"kl\": 1, \"complete\": true}\n"
             "{\"epoch\": 2, \"step\": 8, \"train_nelbo\": 7, \"train_recon\": 6, \"train_kl\": 1, \"test_nelbo\": 7.5, "
             "\"recon\": 6.5, \"kl\": 1, \"complete\": true, \"val_nelbo\": null}\n");
  ASSERT_EQ(cuvae_run_curves_read(dir.c_str(), &c), 0) << cuvae_last_error();
  EXPECT_EQ(layout(), "negative ELBO:train_nelbo,val_nelbo,test_nelbo|reconstruction:train_recon,recon|KL:train_kl,kl");
  cuvae_run_curves_free(&c);
  // Per-epoch lr and grad_norm without steps.jsonl's; steps.jsonl with grad_norm and no lr takes over grad_norm only.
  write_file(dir + "/metrics.jsonl", "{\"epoch\": 1, \"step\": 4, \"lr\": 0.1, \"grad_norm\": 3}\n"
                                     "{\"epoch\": 2, \"step\": 8, \"lr\": 0.05, \"grad_norm\": 2}\n");
  ASSERT_EQ(cuvae_run_curves_read(dir.c_str(), &c), 0) << cuvae_last_error();
  EXPECT_EQ(layout(), "learning rate:lr|gradient norm:grad_norm");
  cuvae_run_curves_free(&c);
  write_file(dir + "/steps.jsonl", "{\"step\": 2, \"grad_norm\": 5}\n{\"step\": 4, \"grad_norm\": inf}\n");
  ASSERT_EQ(cuvae_run_curves_read(dir.c_str(), &c), 0) << cuvae_last_error();
  EXPECT_EQ(layout(), "learning rate:lr|gradient norm:steps.grad_norm");
  EXPECT_EQ(c.panels[1].series[0].x[0], 0.5);
}

TEST_F(Plot, ALaterRowOfTheSameEpochReplacesTheEarlier) {
  // A run cut at step 5 of epoch 2 and resumed: its partial row, then the epoch's complete row.
  write_file(dir + "/metrics.jsonl", "{\"epoch\": 1, \"step\": 4, \"test_nelbo\": 9, \"complete\": true}\n"
                                     "{\"epoch\": 2, \"step\": 5, \"test_nelbo\": 8, \"complete\": false}\n"
                                     "\n"
                                     "{\"epoch\": 2, \"step\": 8, \"test_nelbo\": 7, \"complete\": true}\n");
  ASSERT_EQ(cuvae_run_curves_read(dir.c_str(), &c), 0) << cuvae_last_error();
  ASSERT_EQ(c.n_rows, 2u);
  const cuvae_plot_series &s = c.panels[0].series[0];
  EXPECT_EQ(s.x[1], 2.0);
  EXPECT_EQ(s.y[1], 7.0);
}

TEST_F(Plot, WithoutACompleteEpochTheAxisIsTheStep) {
  write_file(dir + "/metrics.jsonl", "{\"epoch\": 1, \"step\": 37, \"test_nelbo\": 9, \"complete\": false}\n");
  ASSERT_EQ(cuvae_run_curves_read(dir.c_str(), &c), 0) << cuvae_last_error();
  EXPECT_STREQ(c.xlabel, "step");
  EXPECT_EQ(c.steps_per_epoch, 0);
  EXPECT_EQ(c.panels[0].series[0].x[0], 37.0);
}

TEST_F(Plot, RefusesRowsThatDisagree) {
  const struct {
    const char *rows, *message;
  } cases[] = {
      {"{\"epoch\": 1, \"step\": 4}\n{\"epoch\": 2, \"step\": 10, \"kl\": 1}\n",
       "metrics.jsonl line 2: the complete epoch 2 ends at step 10, but line 1 has 4 steps per epoch"},
      {"{\"epoch\": 2, \"step\": 5, \"kl\": 1}\n", "line 1: the complete epoch 2 ends at step 5, which is not a multiple"},
      {"{\"step\": 5, \"kl\": 1}\n", "metrics.jsonl line 1: the row has no \"epoch\""},
      {"{\"epoch\": 1, \"step\": 2.5, \"kl\": 1}\n", "line 1: \"step\" is 2.5; expected a whole number >= 1"},
      {"{\"epoch\": 1, \"step\": 2, \"complete\": 1}\n", "line 1: \"complete\" is a number; expected true or false"},
      {"{\"epoch\": 1, \"step\": 2, \"kl\": true}\n", "line 1: \"kl\" is true or false; expected a number"},
      {"{\"epoch\": 1, \"step\": 2, \"kl\": 1}\n{\"epoch\": 2, \"step\": 4, \"kl\": 1", "metrics.jsonl line 2: column"},
      {"{\"epoch\": 1, \"step\": 2, \"samples_per_s\": 1}\n", "no row has a key that a panel draws"},
  };
  for (const auto &k : cases) {
    write_file(dir + "/metrics.jsonl", k.rows);
    EXPECT_EQ(cuvae_run_curves_read(dir.c_str(), &c), -1) << k.rows;
    EXPECT_NE(std::string(cuvae_last_error()).find(k.message), std::string::npos) << cuvae_last_error();
    cuvae_run_curves_free(&c);
  }
}

struct Png {
  int width = 0, height = 0;
  std::vector<uint8_t> px;
  const uint8_t *at(int x, int y) const { return &px[((size_t)y * width + x) * 3]; }
};

Png read_rgb(const std::string &path) {
  Png p;
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str())) return p;
  img.format = PNG_FORMAT_RGB;
  p.px.resize(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, p.px.data(), 0, nullptr)) return Png();
  p.width = (int)img.width;
  p.height = (int)img.height;
  return p;
}

// Pixels in the box whose colour is the first series' red (palette 0, (219, 38, 38), blended with white at the
// line's anti-aliased edges), and pixels that are not white.
void count_ink(const Png &p, const int box[4], size_t *red, size_t *ink) {
  *red = *ink = 0;
  for (int y = box[1]; y < box[1] + box[3]; y++)
    for (int x = box[0]; x < box[0] + box[2]; x++) {
      const uint8_t *c = p.at(x, y);
      if (c[0] > 180 && c[1] < 120 && c[2] < 120) ++*red;
      if (c[0] < 250 || c[1] < 250 || c[2] < 250) ++*ink;
    }
}

TEST_F(Plot, OnePanelOfTheStatedSizePerChoiceEachWithItsCurve) {
  write_full_run(true);
  ASSERT_EQ(cuvae_plot_run(dir.c_str(), nullptr), 0) << cuvae_last_error();
  const Png p = read_rgb(dir + "/" CUVAE_PLOT_FILE);
  EXPECT_EQ(p.width, 2 * CUVAE_PLOT_PANEL_W);
  EXPECT_EQ(p.height, 3 * CUVAE_PLOT_PANEL_H);
  // The legend's red mark is a 20 x 2 line and a disc of radius 4, under 100 pixels; the first series' line crosses
  // the plot area (over 450 pixels wide, 2 pixels thick), so well over 300 red pixels mean its curve was drawn.
  for (int i = 0; i < 6; i++) {
    int box[4];
    cuvae_plot_panel_box(6, i, box);
    size_t red, ink;
    count_ink(p, box, &red, &ink);
    EXPECT_GT(red, 300u) << "panel " << i;
  }
  // Five panels (no steps.jsonl, no skips): the sixth cell of the 2 x 3 grid stays white.
  std::string m;
  for (int e = 1; e <= 4; e++)
    m += "{\"epoch\": " + std::to_string(e) + ", \"step\": " + std::to_string(5 * e) + ", \"test_nelbo\": " +
         std::to_string(100 - e) + ", \"recon\": 1, \"kl\": 2, \"lr\": 0.5, \"grad_norm\": " + std::to_string(e) + "}\n";
  write_file(dir + "/metrics.jsonl", m);
  write_file(dir + "/steps.jsonl", "");
  const std::string out = dir + "/five.png";
  ASSERT_EQ(cuvae_plot_run(dir.c_str(), out.c_str()), 0) << cuvae_last_error();
  const Png q = read_rgb(out);
  int w, h;
  cuvae_plot_size(5, &w, &h);
  ASSERT_EQ(q.width, w);
  ASSERT_EQ(q.height, h);
  EXPECT_EQ(h, 3 * CUVAE_PLOT_PANEL_H);
  for (int i = 0; i < 6; i++) {
    int box[4];
    cuvae_plot_panel_box(5, i, box);
    size_t red, ink;
    count_ink(q, box, &red, &ink);
    if (i < 5)
      EXPECT_GT(red, 300u) << "panel " << i;
    else
      EXPECT_EQ(ink, 0u) << "the empty cell";
  }
  // One panel: a figure of one panel's size.
  write_file(dir + "/metrics.jsonl", "{\"epoch\": 1, \"step\": 3, \"skipped\": 0}\n");
  ASSERT_EQ(cuvae_plot_run(dir.c_str(), out.c_str()), 0) << cuvae_last_error();
  EXPECT_EQ(read_rgb(out).width, CUVAE_PLOT_PANEL_W);
  EXPECT_EQ(read_rgb(out).height, CUVAE_PLOT_PANEL_H);
}

TEST_F(Plot, UnwritableOutputIsAnError) {
  write_full_run(false);
  const std::string out = dir + "/missing/x.png";
  EXPECT_EQ(cuvae_plot_run(dir.c_str(), out.c_str()), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("cannot write " + out), std::string::npos) << cuvae_last_error();
}

Result plot_cli(const std::string &args) { return run_shell(std::string(CUVAE_BIN) + " plot " + args); }

TEST_F(Plot, CliWritesThePictureAndPrintsWhatItDrew) {
  write_full_run(false);
  Result r = plot_cli(dir + "/");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("{\"plot\": \"" + dir + "/curves.png\", \"width\": 1200, \"height\": 1080, \"x\": \"epoch\", "
                       "\"steps_per_epoch\": 10, \"rows\": 7, \"step_rows\": 0"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("{\"title\": \"gradient norm\", \"series\": [\"grad_norm\", \"grad_norm_max\"]}"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(read_rgb(dir + "/curves.png").width, 1200);
  r = plot_cli(dir + " --out=" + dir + "/c2.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(read_rgb(dir + "/c2.png").height, 1080);
  r = plot_cli("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("usage: cuvae plot RUN_DIR [--out FILE.png]"), std::string::npos);
  r = run_shell(std::string(CUVAE_BIN) + " help");
  EXPECT_NE(r.out.find("plot RUN_DIR"), std::string::npos) << r.out;
}

TEST_F(Plot, CliRefusesEveryBadInputWithItsMessage) {
  write_file(dir + "/file", "x");
  mkdir((dir + "/empty").c_str(), 0755);
  mkdir((dir + "/blank").c_str(), 0755);
  write_file(dir + "/blank/metrics.jsonl", "\n  \n");
  mkdir((dir + "/bad").c_str(), 0755);
  write_file(dir + "/bad/metrics.jsonl", full_row(1, 10, true) + "{\"epoch\": 2, \"step\": 20, \"kl\": 1,}\n");
  mkdir((dir + "/badsteps").c_str(), 0755);
  write_file(dir + "/badsteps/metrics.jsonl", full_row(1, 10, true));
  write_file(dir + "/badsteps/steps.jsonl", "{\"step\": 1, \"grad_norm\": 2}\n{\"step\": 2, \"grad_norm\": \"x\"}\n");
  mkdir((dir + "/ok").c_str(), 0755);
  write_file(dir + "/ok/metrics.jsonl", full_row(1, 10, true));
  const struct {
    std::string args, message;
    int code;
  } cases[] = {
      {dir + "/none", dir + "/none: No such file or directory (expected the run directory of cuvae train)", 1},
      {dir + "/file", dir + "/file is not a directory", 1},
      {dir + "/empty", "cannot read " + dir + "/empty/metrics.jsonl: No such file or directory", 1},
      {dir + "/blank", dir + "/blank/metrics.jsonl has no rows", 1},
      {dir + "/bad", dir + "/bad/metrics.jsonl line 2: column 34: expected '\"', found '}'", 1},
      {dir + "/badsteps", dir + "/badsteps/steps.jsonl line 2: \"grad_norm\" is a string; expected a number", 1},
      {dir + "/ok --out " + dir + "/none/x.png", "cannot write " + dir + "/none/x.png: No such file or directory", 1},
      {dir + "/ok --bogus", "unknown option '--bogus' for plot", 2},
      {dir + "/ok --out", "--out needs a value", 2},
      {dir + "/ok --out=", "--out needs a file name", 2},
      {"", "plot needs a RUN_DIR", 2},
      {dir + "/ok " + dir + "/bad", "plot takes one RUN_DIR", 2},
  };
  for (const auto &k : cases) {
    const Result r = plot_cli(k.args);
    EXPECT_EQ(r.code, k.code) << k.args << ": " << r.out;
    EXPECT_NE(r.out.find("error: " + k.message), std::string::npos) << k.args << ": " << r.out;
  }
  struct stat st;
  EXPECT_NE(stat((dir + "/bad/curves.png").c_str(), &st), 0) << "no picture from a malformed run";
}

}  // namespace
