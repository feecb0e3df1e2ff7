// Export to PyTorch and import back (src/io/export.c, docs/EXPORT.md): the safetensors layout byte by byte, bit-exact
// round trips, one clear message for each kind of malformed file, the .npy directory, and (when Debian's
// python3-torch is installed) the PyTorch module of scripts/torch_vae_module.py against `cuvae encode` / `decode`.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cuvae/checkpoint.h"
#include "cuvae/config.h"
#include "cuvae/data.h"
#include "cuvae/error.h"
#include "cuvae/export.h"
#include "cuvae/model.h"
#include "test_util.h"

using namespace cuvae_test;

namespace {

const char *kScripts = CUVAE_TEST_DATA "/../../scripts";

struct Arch {
  const char *name;
  const char *model_ini;  // the [model] section's keys
};

const Arch kArchs[] = {
    {"bernoulli_relu", "hidden = 8, 6\nlatent = 3\n"},
    {"gaussian_tanh", "hidden = 5\nlatent = 2\nlikelihood = gaussian\nsigma = 0.5\nactivation = tanh\n"},
    {"no_hidden", "hidden =\nlatent = 4\n"},
    // the linear Gaussian model of `cuvae ppca`: one learned shared log-variance (decoder_logvar)
    {"linear_learned_shared", "hidden =\nlatent = 2\nlikelihood = gaussian\nsigma = 0.7\n"
                              "gaussian_variance = learned_shared\ndecoder = linear\n"},
};

constexpr size_t kD = 10;

std::string run_cmd(const std::string &cmd, int *code) {
  cuvae_test::Result r = cuvae_test::run_shell(cmd);
  *code = r.code;
  return r.out;
}

bool exists(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

uint64_t get_u64(const std::string &s, size_t at) {
  uint64_t v = 0;
  for (int b = 0; b < 8; b++) v |= (uint64_t)(unsigned char)s[at + b] << (8 * b);
  return v;
}

struct Export : ::testing::Test {
  std::string dir;

  void SetUp() override {
    dir = make_temp_dir();
    ASSERT_FALSE(dir.empty());
    std::vector<float> tr = synthetic_data(64, kD, 1), te = synthetic_data(20, kD, 2);
    write_file(dir + "/train.npy", npy_bytes("<f4", "(64, 10)", tr.data(), tr.size() * 4));
    write_file(dir + "/test.npy", npy_bytes("<f4", "(20, 10)", te.data(), te.size() * 4));
  }

  std::string ini(const Arch &a) const {
    return "[data]\ndataset =\ntrain_images = " + dir + "/train.npy\ntest_images = " + dir + "/test.npy\n[model]\n" +
           a.model_ini + "[train]\nbatch_size = 16\nthreads = 1\n";
  }

  // A checkpoint of architecture a with initial weights from `seed`, non-zero Adam moments and step 7.
  std::string make_checkpoint(const Arch &a, uint64_t seed, cuvae_model *model_out = nullptr) {
    cuvae_config cfg;
    cuvae_config_defaults(&cfg);
    EXPECT_EQ(cuvae_config_load_string(&cfg, ini(a).c_str(), "test.ini"), 0) << cuvae_last_error();
    EXPECT_EQ(cuvae_config_finalize(&cfg), 0) << cuvae_last_error();
    cuvae_model m;
    EXPECT_EQ(cuvae_model_build(&m, kD, &cfg), 0) << cuvae_last_error();
    std::vector<float> p(m.n_params), am(m.n_params), av(m.n_params);
    EXPECT_EQ(cuvae_model_init(&m, p.data(), seed), 0);
    for (size_t i = 0; i < m.n_params; i++) {
      am[i] = 1e-3f * (float)(i % 17);
      av[i] = 1e-4f * (float)(i % 5 + 1);
    }
    cuvae_checkpoint ck{};
    ck.config_ini = cuvae_config_to_ini(&cfg);
    ck.input_dim = kD;
    ck.n_tensors = m.n_tensors;
    memcpy(ck.tensors, m.tensors, sizeof m.tensors);
    ck.n_params = m.n_params;
    ck.params = p.data();
    ck.adam_m = am.data();
    ck.adam_v = av.data();
    ck.step = 7;
    ck.rng_offset = 28;
    std::string path = dir + "/" + a.name + ".cuvae";
    EXPECT_EQ(cuvae_checkpoint_save(path.c_str(), &ck), 0) << cuvae_last_error();
    free(ck.config_ini);
    if (model_out) *model_out = m;
    return path;
  }

  std::string export_st(const std::string &ckpt, const std::string &name) {
    std::string out = dir + "/" + name + ".safetensors";
    EXPECT_EQ(cuvae_export_checkpoint(ckpt.c_str(), CUVAE_EXPORT_SAFETENSORS, out.c_str()), 0) << cuvae_last_error();
    return out;
  }
};

// ---- layout and round trip --------------------------------------------------------------------------------

TEST_F(Export, TorchNamesFollowTheModule) {
  cuvae_model m;
  make_checkpoint(kArchs[0], 1, &m);
  cuvae_torch_tensor t[CUVAE_MAX_TENSORS];
  int n = 0;
  ASSERT_EQ(cuvae_torch_layout(&m, t, &n), 0) << cuvae_last_error();
  const char *names[] = {"encoder.0.weight",    "encoder.0.bias",    "encoder.2.weight", "encoder.2.bias",
                         "encoder_head.weight", "encoder_head.bias", "decoder.0.weight", "decoder.0.bias",
                         "decoder.2.weight",    "decoder.2.bias",    "decoder.4.weight", "decoder.4.bias"};
  const size_t shapes[][2] = {{8, 10}, {8, 1}, {6, 8}, {6, 1}, {6, 6},  {6, 1},
                              {6, 3},  {6, 1}, {8, 6}, {8, 1}, {10, 8}, {10, 1}};
  ASSERT_EQ(n, 12);
  for (int i = 0; i < n; i++) {
    EXPECT_STREQ(t[i].name, names[i]);
    EXPECT_EQ(t[i].shape[0], shapes[i][0]) << names[i];
    EXPECT_EQ(t[i].shape[1], shapes[i][1]) << names[i];
    EXPECT_EQ(t[i].rank, shapes[i][1] == 1 && std::string(names[i]).find("bias") != std::string::npos ? 1 : 2);
  }
  // The head is cuvae's enc.mu.weight followed by enc.lv.weight.
  EXPECT_EQ(t[4].offset, cuvae_model_find(&m, "enc.mu.weight")->offset);
  EXPECT_EQ(t[5].offset, cuvae_model_find(&m, "enc.mu.bias")->offset);
}

TEST_F(Export, SafetensorsBytesFollowTheFormat) {
  cuvae_model m;
  std::string ck_path = make_checkpoint(kArchs[1], 3, &m);
  std::string st = read_file(export_st(ck_path, "g"));
  ASSERT_GT(st.size(), 8u);
  const uint64_t n = get_u64(st, 0);
  ASSERT_LE(8 + n, st.size());
  EXPECT_EQ(n % 8, 0u) << "the data should start 8-byte aligned";
  EXPECT_EQ(st[8], '{');
  cJSON *root = cJSON_ParseWithLength(st.data() + 8, n);
  ASSERT_NE(root, nullptr);
  const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
  ASSERT_TRUE(cJSON_IsObject(meta));
  std::map<std::string, std::string> want = {
      {"input_dim", "10"}, {"hidden", "5"},        {"latent", "2"}, {"likelihood", "gaussian"},
      {"sigma", "0.5"},    {"activation", "tanh"}, {"step", "7"},   {"format", "cuvae-vae"}};
  for (auto &kv : want) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, kv.first.c_str());
    ASSERT_TRUE(cJSON_IsString(v)) << kv.first;
    EXPECT_EQ(std::string(v->valuestring), kv.second) << kv.first;
  }
  const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(meta, "config");
  ASSERT_TRUE(cJSON_IsString(cfg));
  cuvae_checkpoint ck;
  ASSERT_EQ(cuvae_checkpoint_load(ck_path.c_str(), &ck), 0);
  EXPECT_EQ(std::string(cfg->valuestring), std::string(ck.config_ini));

  // Every tensor: F32, its shape, contiguous offsets; its bytes are the little-endian floats of cuvae's buffer.
  cuvae_torch_tensor t[CUVAE_MAX_TENSORS];
  int nt = 0;
  ASSERT_EQ(cuvae_torch_layout(&m, t, &nt), 0);
  uint64_t expect_begin = 0;
  int seen = 0;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (std::string(e->string) == "__metadata__") continue;
    ASSERT_LT(seen, nt);
    const cuvae_torch_tensor &tt = t[seen++];
    EXPECT_STREQ(e->string, tt.name);
    EXPECT_STREQ(cJSON_GetObjectItemCaseSensitive(e, "dtype")->valuestring, "F32");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    ASSERT_EQ(cJSON_GetArraySize(shape), tt.rank);
    for (int d = 0; d < tt.rank; d++) EXPECT_EQ((size_t)cJSON_GetArrayItem(shape, d)->valuedouble, tt.shape[d]);
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    const uint64_t b = (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    const uint64_t en = (uint64_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    EXPECT_EQ(b, expect_begin);
    EXPECT_EQ(en - b, 4 * tt.count);
    expect_begin = en;
    for (size_t j = 0; j < tt.count; j++) {
      uint32_t u = 0;
      for (int k = 0; k < 4; k++) u |= (uint32_t)(unsigned char)st[8 + n + b + 4 * j + k] << (8 * k);
      float f;
      memcpy(&f, &u, 4);
      ASSERT_EQ(memcmp(&f, &ck.params[tt.offset + j], 4), 0) << tt.name << "[" << j << "]";
    }
  }
  EXPECT_EQ(seen, nt);
  EXPECT_EQ(8 + n + expect_begin, st.size());
  cJSON_Delete(root);
  cuvae_checkpoint_free(&ck);
}

TEST_F(Export, RoundTripIsBitIdentical) {
  for (const Arch &a : kArchs) {
    SCOPED_TRACE(a.name);
    std::string ck_path = make_checkpoint(a, 11);
    std::string st = export_st(ck_path, a.name);
    cuvae_checkpoint orig, back;
    ASSERT_EQ(cuvae_checkpoint_load(ck_path.c_str(), &orig), 0);
    ASSERT_EQ(cuvae_import_safetensors(st.c_str(), &back), 0) << cuvae_last_error();
    ASSERT_EQ(back.n_params, orig.n_params);
    EXPECT_EQ(memcmp(back.params, orig.params, orig.n_params * 4), 0);
    EXPECT_EQ(back.input_dim, orig.input_dim);
    EXPECT_EQ(std::string(back.config_ini), std::string(orig.config_ini));
    ASSERT_EQ(back.n_tensors, orig.n_tensors);
    for (int i = 0; i < orig.n_tensors; i++) {
      EXPECT_STREQ(back.tensors[i].name, orig.tensors[i].name);
      EXPECT_EQ(back.tensors[i].offset, orig.tensors[i].offset);
    }
    EXPECT_EQ(back.step, 0);
    for (size_t i = 0; i < back.n_params; i++) ASSERT_TRUE(back.adam_m[i] == 0.0f && back.adam_v[i] == 0.0f);

    // Through the file: import writes a checkpoint that loads, and exporting that gives the same tensor bytes.
    std::string ck2 = dir + "/" + a.name + "_back.cuvae";
    ASSERT_EQ(cuvae_import_to_checkpoint(st.c_str(), ck2.c_str()), 0) << cuvae_last_error();
    cuvae_checkpoint loaded;
    ASSERT_EQ(cuvae_checkpoint_load(ck2.c_str(), &loaded), 0) << cuvae_last_error();
    EXPECT_EQ(memcmp(loaded.params, orig.params, orig.n_params * 4), 0);
    std::string st2 = export_st(ck2, std::string(a.name) + "_again");
    std::string b1 = read_file(st), b2 = read_file(st2);
    const uint64_t n1 = get_u64(b1, 0), n2 = get_u64(b2, 0);
    EXPECT_EQ(b1.substr(8 + n1), b2.substr(8 + n2));
    cuvae_checkpoint_free(&orig);
    cuvae_checkpoint_free(&back);
    cuvae_checkpoint_free(&loaded);
  }
}

// The members the PyTorch module does not hold yet are refused with a message, never exported without a tensor.
TEST_F(Export, MembersOutsideTheModuleAreRefused) {
  const Arch refused[] = {
      {"per_dim", "hidden = 5\nlatent = 2\nlikelihood = gaussian\ngaussian_variance = learned_per_dim\n"},
      {"linear_under_hidden", "hidden = 5\nlatent = 2\ndecoder = linear\n"},
  };
  for (const Arch &a : refused) {
    SCOPED_TRACE(a.name);
    const std::string ck = make_checkpoint(a, 3), out = dir + "/" + a.name + ".safetensors";
    EXPECT_EQ(cuvae_export_checkpoint(ck.c_str(), CUVAE_EXPORT_SAFETENSORS, out.c_str()), -1);
    EXPECT_NE(std::string(cuvae_last_error()).find("export"), std::string::npos) << cuvae_last_error();
    EXPECT_FALSE(exists(out));
  }
}

// The learned shared log-variance travels as decoder_logvar [1], and the metadata says so.
TEST_F(Export, LearnedSharedVarianceIsExported) {
  cuvae_model m;
  make_checkpoint(kArchs[3], 4, &m);
  cuvae_torch_tensor t[CUVAE_MAX_TENSORS];
  int n = 0;
  ASSERT_EQ(cuvae_torch_layout(&m, t, &n), 0) << cuvae_last_error();
  ASSERT_GE(n, 1);
  EXPECT_STREQ(t[n - 1].name, "decoder_logvar");
  EXPECT_EQ(t[n - 1].offset, m.logvar);
  const std::string st = read_file(export_st(dir + "/" + kArchs[3].name + ".cuvae", "lv"));
  EXPECT_NE(st.find("\"gaussian_variance\":\"learned_shared\""), std::string::npos);
}

// `cuvae eval` accepts the imported checkpoint and finds the same loss.
TEST_F(Export, ImportedCheckpointEvaluatesTheSame) {
  std::string ck_path = make_checkpoint(kArchs[0], 5);
  std::string st = export_st(ck_path, "m");
  int code = 0;
  std::string out = run_cmd(std::string(CUVAE_BIN) + " import " + st + " --out " + dir + "/imp.cuvae", &code);
  ASSERT_EQ(code, 0) << out;
  std::string a = run_cmd(std::string(CUVAE_BIN) + " eval " + ck_path + " --device cpu", &code);
  ASSERT_EQ(code, 0) << a;
  std::string b = run_cmd(std::string(CUVAE_BIN) + " eval " + dir + "/imp.cuvae --device cpu", &code);
  ASSERT_EQ(code, 0) << b;
  auto from = [](const std::string &s) { return s.substr(s.find("\"test_nelbo\"")); };
  EXPECT_EQ(from(a), from(b));
  EXPECT_NE(b.find("\"step\": 0"), std::string::npos) << b;
}

// ---- malformed files: each is refused with one clear message, and import writes nothing ----------------------

struct Malformed : Export {
  std::string good;  // bytes of a valid export
  std::string header_json;
  std::string data;

  void SetUp() override {
    Export::SetUp();
    good = read_file(export_st(make_checkpoint(kArchs[0], 2), "good"));
    const uint64_t n = get_u64(good, 0);
    header_json = good.substr(8, n);
    data = good.substr(8 + n);
  }

  static std::string assemble(const std::string &json, const std::string &data) {
    std::string h = json;
    h.append((8 - h.size() % 8) % 8, ' ');
    std::string out(8, '\0');
    for (int b = 0; b < 8; b++) out[b] = (char)((uint64_t)h.size() >> (8 * b));
    return out + h + data;
  }

  // The valid header with `edit` applied to its JSON tree, and `data` after it.
  std::string edited(const std::function<void(cJSON *)> &edit, const std::string *data_override = nullptr) {
    cJSON *root = cJSON_Parse(header_json.c_str());
    EXPECT_NE(root, nullptr);
    edit(root);
    char *js = cJSON_PrintUnformatted(root);
    std::string s(js);
    free(js);
    cJSON_Delete(root);
    return assemble(s, data_override ? *data_override : data);
  }

  void expect_refused(const std::string &bytes, const std::string &needle) {
    const std::string path = dir + "/bad.safetensors", out = dir + "/bad.cuvae";
    write_file(path, bytes);
    cuvae_checkpoint ck;
    EXPECT_EQ(cuvae_import_safetensors(path.c_str(), &ck), -1);
    const std::string msg = cuvae_last_error();
    EXPECT_EQ(msg.rfind(path, 0), 0u) << "message should start with the path: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "missing '" << needle << "' in: " << msg;
    EXPECT_EQ(ck.params, nullptr);
    EXPECT_EQ(cuvae_import_to_checkpoint(path.c_str(), out.c_str()), -1);
    EXPECT_FALSE(exists(out)) << "import must not write a checkpoint from a bad file";
  }
};

void set_offsets(cJSON *root, const char *name, double b, double e) {
  cJSON *t = cJSON_GetObjectItemCaseSensitive(root, name);
  cJSON_ReplaceItemInObjectCaseSensitive(t, "data_offsets",
                                         cJSON_CreateDoubleArray(std::vector<double>{b, e}.data(), 2));
}

std::vector<double> offsets(const std::string &json, const char *name) {
  cJSON *root = cJSON_Parse(json.c_str());
  const cJSON *o = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, name), "data_offsets");
  std::vector<double> v = {cJSON_GetArrayItem(o, 0)->valuedouble, cJSON_GetArrayItem(o, 1)->valuedouble};
  cJSON_Delete(root);
  return v;
}

TEST_F(Malformed, TheValidFileImports) {
  write_file(dir + "/ok.safetensors", assemble(header_json, data));
  cuvae_checkpoint ck;
  ASSERT_EQ(cuvae_import_safetensors((dir + "/ok.safetensors").c_str(), &ck), 0) << cuvae_last_error();
  cuvae_checkpoint_free(&ck);
}

TEST_F(Malformed, Truncated) {
  expect_refused(good.substr(0, 5), "truncated");
  expect_refused("", "truncated");
  expect_refused(good.substr(0, good.size() - 10), "out of range");
  expect_refused(good.substr(0, 8 + header_json.size() / 2), "bad header length");
}

TEST_F(Malformed, BadHeaderLength) {
  std::string b = good;
  for (int i = 0; i < 8; i++) b[i] = (char)0xff;
  expect_refused(b, "bad header length");
  b = good;
  for (int i = 0; i < 8; i++) b[i] = 0;
  expect_refused(b, "bad header length");
  // A length that fits the file but cuts the JSON short.
  b = good;
  b[0] = (char)(header_json.size() - 16);
  b[1] = (char)((header_json.size() - 16) >> 8);
  expect_refused(b, "not valid JSON");
}

// A file that is not a safetensors file at all (text, a cuvae checkpoint) is named as such, with the header length
// its first 8 bytes give; a real export cut short inside its header is called truncated.
TEST_F(Malformed, NotASafetensorsFileSaysSo) {
  const std::string text = "definitely not a safetensors file\n";
  uint64_t n = 0;
  for (int b = 0; b < 8; b++) n |= (uint64_t)(unsigned char)text[b] << (8 * b);
  EXPECT_EQ(n, 7310584018064794980ull);  // "definite", little-endian
  expect_refused(text, " is not a safetensors file (bad header length: its first 8 bytes read as 7310584018064794980, "
                       "but the file has 34 bytes)");
  expect_refused(read_file(make_checkpoint(kArchs[0], 2)), " is not a safetensors file (bad header length");
  expect_refused(good.substr(0, 100), ": truncated: bad header length");
}

TEST_F(Malformed, BadJson) {
  std::string j = header_json;
  j[j.find("\"dtype\"") + 8] = ';';
  expect_refused(assemble(j, data), "not valid JSON");
  expect_refused(assemble("[1, 2, 3]", data), "does not start with '{'");
  expect_refused(assemble(header_json + "xx", data), "after the JSON header");
}

TEST_F(Malformed, MissingTensor) {
  expect_refused(edited([](cJSON *r) { cJSON_DeleteItemFromObjectCaseSensitive(r, "decoder.2.bias"); }),
                 "tensor 'decoder.2.bias' is missing");
}

TEST_F(Malformed, UnexpectedOrDuplicateTensor) {
  expect_refused(edited([](cJSON *r) {
                   cJSON_AddItemToObject(r, "decoder.6.weight",
                                         cJSON_Duplicate(cJSON_GetObjectItem(r, "decoder.4.bias"), 1));
                 }),
                 "unexpected tensor 'decoder.6.weight'");
  expect_refused(edited([](cJSON *r) {
                   cJSON_AddItemToObject(r, "encoder.0.bias",
                                         cJSON_Duplicate(cJSON_GetObjectItem(r, "encoder.0.bias"), 1));
                 }),
                 "appears twice");
}

TEST_F(Malformed, WrongShape) {
  expect_refused(
      edited([](cJSON *r) {
        cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "encoder.0.weight");
        cJSON_ReplaceItemInObjectCaseSensitive(t, "shape", cJSON_CreateIntArray(std::vector<int>{8, 11}.data(), 2));
      }),
      "tensor 'encoder.0.weight' has shape [8, 11], expected [8, 10]");
  expect_refused(
      edited([](cJSON *r) {
        cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "encoder_head.bias");
        cJSON_ReplaceItemInObjectCaseSensitive(t, "shape", cJSON_CreateIntArray(std::vector<int>{2, 3}.data(), 2));
      }),
      "has shape [2, 3], expected [6]");
}

TEST_F(Malformed, WrongDtype) {
  expect_refused(edited([](cJSON *r) {
                   cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "decoder.0.weight");
                   cJSON_ReplaceItemInObjectCaseSensitive(t, "dtype", cJSON_CreateString("F16"));
                 }),
                 "tensor 'decoder.0.weight' has dtype F16");
}

TEST_F(Malformed, OffsetsOutOfRangeOrOverlapping) {
  const double size = (double)data.size();
  expect_refused(edited([&](cJSON *r) { set_offsets(r, "decoder.4.bias", size - 36, size + 4); }), "out of range");
  expect_refused(edited([&](cJSON *r) { set_offsets(r, "decoder.4.bias", 1e30, 1e30 + 40); }), "data_offsets");
  expect_refused(edited([&](cJSON *r) { set_offsets(r, "decoder.4.bias", 40, 20); }), "begin <= end");
  expect_refused(edited([&](cJSON *r) { set_offsets(r, "decoder.4.bias", size - 40, size - 4); }), "needs 40");
  // encoder.0.bias moved 4 bytes back: it overlaps encoder.0.weight, and a hole opens after it.
  std::vector<double> o = offsets(header_json, "encoder.0.bias");
  expect_refused(edited([&](cJSON *r) { set_offsets(r, "encoder.0.bias", o[0] - 4, o[1] - 4); }), "overlap");
  // Extra bytes at the end that no tensor claims.
  expect_refused(assemble(header_json, data + std::string(8, '\0')), "unexpected bytes after the last tensor");
}

TEST_F(Malformed, MetadataProblems) {
  expect_refused(edited([](cJSON *r) { cJSON_DeleteItemFromObjectCaseSensitive(r, "__metadata__"); }),
                 "no __metadata__");
  expect_refused(edited([](cJSON *r) {
                   cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItem(r, "__metadata__"), "config");
                 }),
                 "__metadata__ has no 'config'");
  expect_refused(edited([](cJSON *r) {
                   cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItem(r, "__metadata__"), "hidden",
                                                          cJSON_CreateString("8,7"));
                 }),
                 "__metadata__ hidden is \"8,7\"");
  expect_refused(edited([](cJSON *r) {
                   cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItem(r, "__metadata__"), "config",
                                                          cJSON_CreateString("[model]\nlatent = banana\n"));
                 }),
                 "__metadata__ config");
  expect_refused(edited([](cJSON *r) {
                   cJSON_ReplaceItemInObjectCaseSensitive(cJSON_GetObjectItem(r, "__metadata__"), "input_dim",
                                                          cJSON_CreateNumber(10));
                 }),
                 "not a string");
}

TEST_F(Malformed, NonFiniteValue) {
  std::string d = data;
  const float nan = std::nanf("");
  memcpy(&d[8], &nan, 4);
  expect_refused(assemble(header_json, d), "element 2 is NaN");
}

TEST_F(Malformed, ImportNeverReplacesAGoodCheckpointWithABadFile) {
  const std::string out = dir + "/keep.cuvae";
  write_file(dir + "/good.safetensors", good);
  ASSERT_EQ(cuvae_import_to_checkpoint((dir + "/good.safetensors").c_str(), out.c_str()), 0);
  const std::string before = read_file(out);
  write_file(dir + "/bad.safetensors", good.substr(0, good.size() - 1));
  EXPECT_EQ(cuvae_import_to_checkpoint((dir + "/bad.safetensors").c_str(), out.c_str()), -1);
  EXPECT_EQ(read_file(out), before);
}

// ---- the .npy directory ---------------------------------------------------------------------------------------

TEST_F(Export, NpyDirectoryHasOneFilePerTensor) {
  cuvae_model m;
  std::string ck_path = make_checkpoint(kArchs[0], 9, &m);
  const std::string out = dir + "/npy";
  ASSERT_EQ(cuvae_export_checkpoint(ck_path.c_str(), CUVAE_EXPORT_NPY, out.c_str()), 0) << cuvae_last_error();
  cuvae_checkpoint ck;
  ASSERT_EQ(cuvae_checkpoint_load(ck_path.c_str(), &ck), 0);
  cuvae_torch_tensor t[CUVAE_MAX_TENSORS];
  int nt = 0;
  ASSERT_EQ(cuvae_torch_layout(&m, t, &nt), 0);
  for (int i = 0; i < nt; i++) {
    SCOPED_TRACE(t[i].name);
    cuvae_array a;
    ASSERT_EQ(cuvae_npy_read((out + "/" + t[i].name + ".npy").c_str(), &a), 0) << cuvae_last_error();
    EXPECT_EQ(a.dtype, CUVAE_DTYPE_F32);
    ASSERT_EQ(a.ndim, t[i].rank);
    for (int d = 0; d < a.ndim; d++) EXPECT_EQ(a.shape[d], t[i].shape[d]);
    EXPECT_EQ(memcmp(a.data, ck.params + t[i].offset, t[i].count * 4), 0);
    cuvae_array_free(&a);
  }
  cJSON *meta = cJSON_Parse(read_file(out + "/metadata.json").c_str());
  ASSERT_NE(meta, nullptr);
  const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(meta, "tensors");
  EXPECT_EQ(cJSON_GetArraySize(tensors), nt);
  EXPECT_STREQ(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(meta, "__metadata__"), "latent")->valuestring, "3");
  cJSON_Delete(meta);
  cuvae_checkpoint_free(&ck);

  // A second export into the (now non-empty) directory is refused and leaves it as it was, with no leftovers.
  const std::string before = read_file(out + "/encoder.0.weight.npy");
  EXPECT_EQ(cuvae_export_checkpoint(ck_path.c_str(), CUVAE_EXPORT_NPY, out.c_str()), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("not empty"), std::string::npos) << cuvae_last_error();
  EXPECT_EQ(read_file(out + "/encoder.0.weight.npy"), before);
  int code = 0;
  std::string ls = run_cmd("ls -a " + dir, &code);
  EXPECT_EQ(ls.find(".tmp"), std::string::npos) << ls;
  // An empty directory is fine, and so is a path with a trailing slash.
  ASSERT_EQ(mkdir((dir + "/empty").c_str(), 0777), 0);
  EXPECT_EQ(cuvae_export_checkpoint(ck_path.c_str(), CUVAE_EXPORT_NPY, (dir + "/empty").c_str()), 0)
      << cuvae_last_error();
  EXPECT_EQ(cuvae_export_checkpoint(ck_path.c_str(), CUVAE_EXPORT_NPY, (dir + "/slash/").c_str()), 0)
      << cuvae_last_error();
  EXPECT_EQ(read_file(dir + "/slash/encoder.0.weight.npy"), before);
  // safetensors onto a directory is refused.
  EXPECT_EQ(cuvae_export_checkpoint(ck_path.c_str(), CUVAE_EXPORT_SAFETENSORS, out.c_str()), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("is a directory"), std::string::npos) << cuvae_last_error();
}

TEST(NpyWriter, WritesWhatTheReaderReads) {
  std::string dir = make_temp_dir();
  std::vector<float> x = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  const size_t shape2[2] = {2, 3}, shape1[1] = {6};
  ASSERT_EQ(cuvae_npy_write_f32((dir + "/a.npy").c_str(), x.data(), 2, shape2), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_npy_write_f32((dir + "/b.npy").c_str(), x.data(), 1, shape1), 0) << cuvae_last_error();
  for (const char *f : {"/a.npy", "/b.npy"}) {
    cuvae_array a;
    ASSERT_EQ(cuvae_npy_read((dir + f).c_str(), &a), 0) << cuvae_last_error();
    EXPECT_EQ(a.count, 6u);
    EXPECT_EQ(memcmp(a.data, x.data(), 24), 0);
    cuvae_array_free(&a);
    EXPECT_EQ((10 + read_file(dir + f).size() - 24) % 64, 10u) << "data starts on a 64-byte boundary";
  }
  const size_t bad[2] = {2, 0};
  EXPECT_EQ(cuvae_npy_write_f32((dir + "/c.npy").c_str(), x.data(), 2, bad), -1);
  EXPECT_FALSE(exists(dir + "/c.npy"));
  EXPECT_EQ(cuvae_npy_write_f32((dir + "/nodir/c.npy").c_str(), x.data(), 2, shape2), -1);
  EXPECT_NE(std::string(cuvae_last_error()).find("nodir/c.npy"), std::string::npos);
}

// ---- PyTorch ----------------------------------------------------------------------------------------------

bool have_torch() {
  int code = 0;
  run_cmd("/usr/bin/python3 -c 'import torch, numpy'", &code);
  return code == 0;
}

// Writes N rows of inputs x (kD wide) and latents z (Z wide) beside base (base_x.npy, base_z.npy), and runs
// `cuvae encode` / `cuvae decode` of checkpoint ck_path on them on the CPU backend (base_mulv.npy, base_mean.npy).
void encode_and_decode_with_cli(const std::string &ck_path, const std::string &base, size_t N, size_t Z) {
  std::vector<float> x = synthetic_data(N, kD, 9), z(N * Z);
  for (size_t i = 0; i < z.size(); i++) z[i] = 1.5f * std::sin(0.7f * (float)i + 0.3f);
  write_file(base + "_x.npy", npy_bytes("<f4", "(7, 10)", x.data(), x.size() * 4));
  write_file(base + "_z.npy", npy_bytes("<f4", "(7, " + std::to_string(Z) + ")", z.data(), z.size() * 4));
  int code = 0;
  std::string out = run_cmd(std::string(CUVAE_BIN) + " encode " + ck_path + " --in " + base + "_x.npy --out " + base +
                                "_mulv.npy --device cpu",
                            &code);
  ASSERT_EQ(code, 0) << out;
  out = run_cmd(std::string(CUVAE_BIN) + " decode " + ck_path + " --in " + base + "_z.npy --out " + base +
                    "_mean.npy --device cpu",
                &code);
  ASSERT_EQ(code, 0) << out;
}

// Loads each base's export (safetensors and npy directory) into CuvaeVAE, writes its encoder (mu, logvar) and decoder
// means (base_torch_mulv.npy, base_torch_mean.npy) and saves its state_dict back (base_torch.safetensors).
const char kTorchCheckPy[] =
    "import sys, numpy as np, torch\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "from torch_vae_module import CuvaeVAE, load_safetensors, load_npy_dir, save_safetensors\n"
    "for base in sys.argv[2:]:\n"
    "    tensors, meta = load_safetensors(base + '.safetensors')\n"
    "    model = CuvaeVAE.from_metadata(meta)\n"
    "    model.load_state_dict(tensors)\n"
    "    t2, meta2 = load_npy_dir(base + '_npy')\n"
    "    assert meta2 == meta and all(torch.equal(t2[k], tensors[k]) for k in tensors)\n"
    "    CuvaeVAE.from_metadata(meta2).load_state_dict(t2)\n"
    "    with torch.no_grad():\n"
    "        mu, lv = model.encode(torch.from_numpy(np.load(base + '_x.npy')))\n"
    "        mean = model.decode(torch.from_numpy(np.load(base + '_z.npy')))\n"
    "    np.save(base + '_torch_mulv.npy', torch.cat([mu, lv], 1).numpy().astype(np.float32))\n"
    "    np.save(base + '_torch_mean.npy', mean.numpy().astype(np.float32))\n"
    "    save_safetensors(model.state_dict(), base + '_torch.safetensors', model.cuvae_metadata)\n";

// cuvae's output file ours vs PyTorch's theirs: both rows x cols float .npy, elementwise within the bound below.
void compare_with_torch(const std::string &ours, const std::string &theirs, size_t rows, size_t cols) {
  cuvae_array a, b;
  ASSERT_EQ(cuvae_npy_read(ours.c_str(), &a), 0) << cuvae_last_error();
  ASSERT_EQ(cuvae_npy_read(theirs.c_str(), &b), 0) << cuvae_last_error();
  ASSERT_EQ(a.ndim, 2);
  ASSERT_EQ(b.ndim, 2);
  EXPECT_EQ(a.shape[0], rows);
  EXPECT_EQ(a.shape[1], cols);
  ASSERT_EQ(a.count, b.count);
  const float *p = (const float *)a.data, *q = (const float *)b.data;
  double worst = 0;
  for (size_t i = 0; i < a.count; i++) worst = std::max(worst, (double)std::fabs(p[i] - q[i]));
  // |cuvae - torch| <= 1e-5 (absolute): the same float network evaluated with two BLAS libraries in different
  // summation orders. Each side is within gamma_P * net_abs of the exact value (Higham 3.1; P <= 27 terms along
  // the longest path of these 10-8-6-3 models, one sigmoid/tanh at 2 ulp), where net_abs is the network on
  // absolute values, so the two differ by at most 2 gamma_P net_abs = 3.2e-6 net_abs. Condition: net_abs <= 3
  // for these small torch-initialised models on inputs in [0, 1] (weights bounded by 1/sqrt(fan_in)); measured
  // differences are ~1e-7.
  EXPECT_LE(worst, 1e-5) << ours << " vs " << theirs;
  cuvae_array_free(&a);
  cuvae_array_free(&b);
}

// Loads the export into CuvaeVAE with load_state_dict (safetensors file and npy directory), computes encoder
// (mu, logvar) and decoder means, and compares them with `cuvae encode` / `cuvae decode` on the CPU backend. Then
// the other direction: a state_dict saved by save_safetensors imports to the same parameters.
TEST_F(Export, PyTorchModuleMatchesEncodeAndDecode) {
  if (!have_torch())
    GTEST_SKIP() << "PyTorch not available (/usr/bin/python3 -c 'import torch' failed; Debian: python3-torch)";
  const size_t N = 7;
  std::vector<cuvae_model> models;
  std::vector<std::string> bases, ckpts;
  for (const Arch &a : kArchs) {
    SCOPED_TRACE(a.name);
    cuvae_model m;
    const std::string ck_path = make_checkpoint(a, 21, &m), base = dir + "/" + a.name;
    export_st(ck_path, a.name);
    ASSERT_EQ(cuvae_export_checkpoint(ck_path.c_str(), CUVAE_EXPORT_NPY, (base + "_npy").c_str()), 0);
    const size_t Z = m.latent;
    ASSERT_NO_FATAL_FAILURE(encode_and_decode_with_cli(ck_path, base, N, Z));
    models.push_back(m);
    bases.push_back(base);
    ckpts.push_back(ck_path);
  }

  // One Python process for every architecture (importing torch takes seconds).
  write_file(dir + "/check.py", kTorchCheckPy);
  std::string cmd = "/usr/bin/python3 " + dir + "/check.py " + kScripts;
  for (const std::string &b : bases) cmd += " " + b;
  int code = 0;
  std::string out = run_cmd(cmd, &code);
  ASSERT_EQ(code, 0) << out;

  for (size_t k = 0; k < bases.size(); k++) {
    SCOPED_TRACE(bases[k]);
    compare_with_torch(bases[k] + "_mulv.npy", bases[k] + "_torch_mulv.npy", N, 2 * models[k].latent);
    compare_with_torch(bases[k] + "_mean.npy", bases[k] + "_torch_mean.npy", N, kD);
    cuvae_checkpoint orig, back;
    ASSERT_EQ(cuvae_checkpoint_load(ckpts[k].c_str(), &orig), 0);
    ASSERT_EQ(cuvae_import_safetensors((bases[k] + "_torch.safetensors").c_str(), &back), 0) << cuvae_last_error();
    EXPECT_EQ(memcmp(back.params, orig.params, orig.n_params * 4), 0);
    cuvae_checkpoint_free(&orig);
    cuvae_checkpoint_free(&back);
  }
}

}  // namespace
