// safetensors reader and writer: round trips, golden files written by the reference Python
// implementation (tests/tools/make_safetensors_golden.py), and every malformed header FACTS lists.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/io/safetensors.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using kh::test::TempDir;

namespace {

// A file = 8-byte little-endian length + header JSON (as given, unpadded) + data bytes.
std::string rawFile(const std::string& header, const std::string& data, uint64_t lengthOverride = UINT64_MAX) {
  uint64_t n = lengthOverride == UINT64_MAX ? header.size() : lengthOverride;
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s + header + data;
}

// Opening must fail with a kh::Error whose one-line message names the file and contains `cause`.
void expectRefused(const std::string& bytes, const std::string& cause) {
  TempDir d;
  const std::string p = d.file("bad.safetensors");
  kh::test::writeFile(p, bytes);
  try {
    kh::SafetensorsFile::open(p);
    FAIL() << "accepted a file that should fail with: " << cause;
  } catch (const kh::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(p), std::string::npos) << m;
    EXPECT_NE(m.find(cause), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "error must be one line: " << m;
  }
}

}  // namespace

TEST(Safetensors, RefusesTruncatedFile) { expectRefused("\x10\x00\x00", "truncated file"); }

TEST(Safetensors, RefusesHeaderLengthBeyondFile) {
  expectRefused(rawFile("{}", "", 4096), "runs past the end of the file");
}

TEST(Safetensors, RefusesHeaderOver100MB) { expectRefused(rawFile("{}", "", 100'000'001), "exceeds the 100 MB limit"); }

TEST(Safetensors, RefusesNonObjectJson) {
  expectRefused(rawFile("[1,2,3] ", ""), "not an object");
  expectRefused(rawFile("{\"a\": ", ""), "not valid JSON");
}

TEST(Safetensors, RefusesUnknownDtype) {
  expectRefused(rawFile(R"({"w":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}})", "abcd"), "unknown dtype 'F7'");
}

TEST(Safetensors, RefusesShapeOffsetMismatch) {
  expectRefused(rawFile(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", std::string(12, 'x')),
                "needs 16 bytes but data_offsets span 12");
}

TEST(Safetensors, RefusesShapeOverflow) {
  expectRefused(rawFile(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "abcd"),
                "overflows 64 bits");
}

TEST(Safetensors, RefusesOverlappingOffsets) {
  expectRefused(rawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        std::string(12, 'x')),
                "overlap tensor 'a'");
}

TEST(Safetensors, RefusesNonContiguousOffsets) {
  expectRefused(rawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                        std::string(12, 'x')),
                "leaving a gap after byte 4");
  expectRefused(rawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, 'x')),
                "leaving a gap after byte 0");
}

TEST(Safetensors, RefusesDuplicateNames) {
  expectRefused(rawFile(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                        R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                        "xy"),
                "duplicate tensor name 'a'");
}

TEST(Safetensors, RefusesBufferNotEndingAtEndOfFile) {
  expectRefused(rawFile(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "xyz"), "has 3 bytes after the header");
  expectRefused(rawFile(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "xy"), "the file is truncated");
}

TEST(Safetensors, RefusesBadMetadataAndEntries) {
  expectRefused(rawFile(R"({"__metadata__":{"k":1}})", ""), "is not a string");
  expectRefused(rawFile(R"({"a":[1]})", ""), "entry is not an object");
  expectRefused(rawFile(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", ""), "not a non-negative integer");
  expectRefused(rawFile(R"({"a":{"dtype":"U8","shape":[[[[1]]]],"data_offsets":[0,1]}})", "x"), "nests deeper");
}

TEST(Safetensors, WriterPadsHeaderAndRoundTripsEveryDtype) {
  TempDir d;
  std::vector<std::pair<std::string, at::Tensor>> ts = {
      {"f32", at::arange(6, at::kFloat).reshape({2, 3}) / 3},
      {"f16", at::arange(5, at::kFloat).to(at::kHalf) * 0.25},
      {"bf16", (at::arange(7, at::kFloat) - 3).to(at::kBFloat16)},
      {"f64", at::arange(3, at::kDouble) * 1e-300},
      {"i64", at::arange(4, at::kLong) * (int64_t(1) << 40)},
      {"i32", at::arange(3, at::kInt) - 1},
      {"i16", at::arange(3, at::kShort) * -300},
      {"i8", at::arange(3, at::kChar) - 100},
      {"u8", at::arange(3, at::kByte) + 250},
      {"bool", at::arange(4, at::kLong).remainder(2).to(at::kBool)},
      {"scalar", at::scalar_tensor(2.5, at::kFloat)},
      {"empty", at::zeros({0, 3}, at::kFloat)},
  };
  const std::string p = d.file("all.safetensors");
  kh::saveSafetensors(p, ts, {{"format", "pt"}, {"note", "日本語 ok"}});
  const std::string bytes = kh::test::readFile(p);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  EXPECT_EQ((8 + n) % 8, 0u) << "header must be padded to 8 bytes";
  EXPECT_FALSE(fs::exists(p + ".partial"));

  auto f = kh::SafetensorsFile::open(p);
  EXPECT_EQ(f->header().metadata.at("note"), "日本語 ok");
  ASSERT_EQ(f->tensors().size(), ts.size());
  for (const auto& [name, t] : ts) {
    at::Tensor r = f->tensor(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(r.sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(r, t)) << name;
  }
}

TEST(Safetensors, ViewsAreZeroCopyAndOutliveTheFileObject) {
  TempDir d;
  const std::string p = d.file("v.safetensors");
  kh::saveSafetensors(p, {{"w", at::arange(1024, at::kFloat)}});
  at::Tensor view;
  const void* base = nullptr;
  {
    auto f = kh::SafetensorsFile::open(p);
    view = f->tensor("w");
    base = f->mapping()->data();
    const auto* dataStart = static_cast<const uint8_t*>(base) + f->header().dataOffset;
    EXPECT_EQ(view.data_ptr(), dataStart) << "the tensor must alias the mapping, not a copy";
  }
  // The SafetensorsFile is gone; the view keeps the mapping alive.
  EXPECT_FLOAT_EQ(view[1023].item<float>(), 1023.f);
  // Writing through a view changes this process's private copy, never the file.
  view.mul_(0);
  auto again = kh::SafetensorsFile::open(p);
  EXPECT_FLOAT_EQ(again->tensor("w")[7].item<float>(), 7.f);
}

TEST(Safetensors, ShardedWriterSplitsLikeHuggingFaceAndWritesIndex) {
  TempDir d;
  std::vector<kh::TensorSpec> plan;
  for (int i = 0; i < 5; ++i) plan.push_back({"t" + std::to_string(i), kh::st::DType::F32, {100}});  // 400 B each
  plan.push_back({"big", kh::st::DType::F32, {300}});                                               // 1200 B > shard
  kh::WriterOptions o;
  o.shardBytes = 1000;
  {
    kh::SafetensorsWriter w(d.path(), plan, o);
    // Any order is fine.
    for (int i = static_cast<int>(plan.size()) - 1; i >= 0; --i) {
      const auto& s = plan[static_cast<size_t>(i)];
      w.write(s.name, at::full(s.shape, static_cast<float>(i)));
    }
    EXPECT_FALSE(fs::exists(d.file("model.safetensors.index.json"))) << "nothing final before finish()";
    w.finish();
  }
  // 400+400 | 400+400 | 400 then big (1200) alone -> t4 | big
  std::ifstream idxf(d.file("model.safetensors.index.json"));
  auto idx = nlohmann::json::parse(idxf);
  EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), 5 * 400u + 1200u);
  EXPECT_EQ(idx["weight_map"]["t0"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(idx["weight_map"]["t1"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(idx["weight_map"]["t2"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(idx["weight_map"]["t4"], "model-00003-of-00004.safetensors");
  EXPECT_EQ(idx["weight_map"]["big"], "model-00004-of-00004.safetensors");
  auto f = kh::SafetensorsFile::open(d.file("model-00004-of-00004.safetensors"));
  EXPECT_FLOAT_EQ(f->tensor("big")[299].item<float>(), 5.f);
  for (const auto& e : fs::directory_iterator(d.path()))
    EXPECT_EQ(e.path().string().find(".partial"), std::string::npos) << e.path();
}

TEST(Safetensors, UnfinishedWriterLeavesNothingBehind) {
  TempDir d;
  {
    kh::WriterOptions o;
    o.shardBytes = 8;
    kh::SafetensorsWriter w(d.path(), {{"a", kh::st::DType::F32, {2}}, {"b", kh::st::DType::F32, {2}}}, o);
    w.write("a", at::ones({2}));
    EXPECT_THROW(w.finish(), kh::Error);  // b never written
  }
  EXPECT_TRUE(fs::is_empty(d.path())) << "a failed write must not leave partial or final files";
}

TEST(Safetensors, WriterRejectsWrongTensor) {
  TempDir d;
  kh::SafetensorsWriter w(d.path(), {{"a", kh::st::DType::F32, {2}}});
  EXPECT_THROW(w.write("a", at::ones({3})), kh::Error);
  EXPECT_THROW(w.write("zzz", at::ones({2})), kh::Error);
  EXPECT_THROW(w.write("a", at::ones({2}, at::kDouble)), kh::Error);
}

// Golden file written by the reference implementation (Python safetensors), values listed in JSON.
TEST(Safetensors, ReadsGoldenFileFromReferenceWriter) {
  const std::string dir = kh::test::sourceDir() + "/tests/golden/safetensors";
  std::ifstream ef(dir + "/all_dtypes.json");
  ASSERT_TRUE(ef.good()) << "missing golden file; run tests/tools/make_safetensors_golden.py";
  auto expected = nlohmann::json::parse(ef);
  auto f = kh::SafetensorsFile::open(dir + "/all_dtypes.safetensors");
  const auto wantMeta = expected["__metadata__"].get<std::map<std::string, std::string>>();
  EXPECT_EQ(f->header().metadata, wantMeta);
  size_t checked = 0;
  for (auto it = expected["tensors"].begin(); it != expected["tensors"].end(); ++it) {
    const auto& want = it.value();
    const auto& e = f->entry(it.key());
    EXPECT_EQ(kh::st::dtypeName(e.dtype), want["dtype"].get<std::string>()) << it.key();
    EXPECT_EQ(e.shape, want["shape"].get<std::vector<int64_t>>()) << it.key();
    at::Tensor t = f->tensor(it.key()).to(at::kDouble).flatten();
    auto values = want["values"].get<std::vector<double>>();
    ASSERT_EQ(static_cast<size_t>(t.numel()), values.size()) << it.key();
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(t[static_cast<int64_t>(i)].item<double>(), values[i]) << it.key() << "[" << i << "]";
    ++checked;
  }
  EXPECT_GE(checked, 10u) << "every dtype real checkpoints use";
}
