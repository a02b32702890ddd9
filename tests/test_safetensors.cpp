#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "tests/test_util.h"

namespace calibq {
namespace {

using test::expect_error;
using test::TempDir;

// A safetensors file from a literal header (as another writer would produce it) and
// `data_bytes` bytes of data.
std::string raw_file(const std::string& header, size_t data_bytes, char fill = '\x01') {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, fill);
}

TEST(Safetensors, RoundTripsEveryDtype) {
  TempDir dir;
  NamedTensors tensors = {
      {"f64", at::randn({3, 2}, at::kDouble)},
      {"f32", at::randn({2, 3, 4})},
      {"f16", at::randn({5}).to(at::kHalf)},
      {"bf16", at::randn({4, 4}).to(at::kBFloat16)},
      {"i64", at::arange(-3, 4, at::kLong)},
      {"i32", at::arange(0, 6, at::kInt).reshape({2, 3})},
      {"i16", at::arange(-2, 2, at::kShort)},
      {"i8", at::arange(-128, 127, 17, at::kChar)},
      {"u8", at::arange(0, 255, 5, at::kByte)},
      {"bool", at::tensor({1, 0, 1}, at::kInt).to(at::kBool)},
      {"scalar", at::scalar_tensor(2.5)},
      {"empty", at::empty({0, 3})},
  };
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "kv dump"}};
  write_safetensors(dir.file("a.safetensors"), tensors, meta);

  auto ck = SafetensorsCheckpoint::open(dir.file("a.safetensors"));
  EXPECT_EQ(ck.tensors().size(), tensors.size());
  EXPECT_EQ(ck.metadata(), meta);
  for (const auto& [name, expected] : tensors) {
    at::Tensor got = ck.tensor(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type()) << name;
    EXPECT_EQ(got.sizes(), expected.sizes()) << name;
    EXPECT_TRUE(at::equal(got, expected)) << name;
  }
}

TEST(Safetensors, DataIsEightByteAlignedAndWrittenInOrder) {
  TempDir dir;
  write_safetensors(dir.file("a.safetensors"), {{"z", at::ones({3}, at::kByte)}, {"a", at::ones({2})}});
  std::string bytes = test::read_bytes(dir.file("a.safetensors"));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["z"]["data_offsets"], nlohmann::json({0, 3}));
  EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({3, 11}));
  // "a" starts at an odd offset: the reader must copy it rather than hand out a misaligned float*.
  auto ck = SafetensorsCheckpoint::open(dir.file("a.safetensors"));
  EXPECT_TRUE(at::equal(ck.tensor("a"), at::ones({2})));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ck.tensor("a").data_ptr()) % 4, 0u);
}

TEST(Safetensors, ReadsAFileWrittenByAnotherWriter) {
  // Byte layout as the reference Python implementation writes it.
  TempDir dir;
  std::string header = R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file = raw_file(header, 0);
  file += std::string("\x00\x3c\x00\xc0", 4);  // 1.0, -2.0 in IEEE half, little-endian
  test::write_bytes(dir.file("w.safetensors"), file);
  auto ck = SafetensorsCheckpoint::open(dir.file("w.safetensors"));
  at::Tensor w = ck.tensor("w").to(at::kFloat);
  EXPECT_FLOAT_EQ(w[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(w[1].item<float>(), -2.0f);
}

TEST(Safetensors, TensorsAreCopyOnWriteViewsOfTheFile) {
  TempDir dir;
  write_safetensors(dir.file("a.safetensors"), {{"x", at::zeros({4})}});
  std::string before = test::read_bytes(dir.file("a.safetensors"));
  {
    auto ck = SafetensorsCheckpoint::open(dir.file("a.safetensors"));
    at::Tensor x = ck.tensor("x");
    at::Tensor y = ck.tensor("x");
    EXPECT_EQ(x.data_ptr(), y.data_ptr());  // one mapping, not two copies
    x.fill_(7.0);
  }
  EXPECT_EQ(test::read_bytes(dir.file("a.safetensors")), before);
}

TEST(Safetensors, TensorOutlivesTheCheckpointObject) {
  TempDir dir;
  write_safetensors(dir.file("a.safetensors"), {{"x", at::arange(10, at::kFloat)}});
  at::Tensor x;
  { x = SafetensorsCheckpoint::open(dir.file("a.safetensors")).tensor("x"); }
  EXPECT_TRUE(at::equal(x, at::arange(10, at::kFloat)));
}

TEST(Safetensors, WriterIsAtomicAndRejectsBadInput) {
  TempDir dir;
  std::string path = dir.file("out.safetensors");
  write_safetensors(path, {{"x", at::ones({2})}});
  std::string before = test::read_bytes(path);
  expect_error([&] { write_safetensors(path, {{"c", at::ones({2}, at::kComplexFloat)}}); },
               {"cannot store", "ComplexFloat"});
  expect_error([&] { write_safetensors(path, {{"x", at::ones({1})}, {"x", at::ones({1})}}); },
               {path, "'x' given twice"});
  expect_error([&] { write_safetensors(path, {{"__metadata__", at::ones({1})}}); }, {"reserved"});
  EXPECT_EQ(test::read_bytes(path), before);
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1u) << "a temporary file was left behind";
}

TEST(Safetensors, NonContiguousAndOffsetTensorsAreWrittenByValue) {
  TempDir dir;
  at::Tensor base = at::arange(24, at::kFloat).reshape({4, 6});
  at::Tensor view = base.t().slice(0, 1, 4);  // non-contiguous, non-zero offset
  write_safetensors(dir.file("v.safetensors"), {{"v", view}});
  EXPECT_TRUE(at::equal(SafetensorsCheckpoint::open(dir.file("v.safetensors")).tensor("v"), view));
}

// --- corruption: each is one clear error naming the file (and the tensor) ---

struct CorruptCase {
  const char* name;
  std::string bytes;
  std::vector<std::string> message;  // parts that must appear (besides the path)
};

class SafetensorsCorrupt : public ::testing::TestWithParam<int> {};

std::vector<CorruptCase> corrupt_cases() {
  auto entry = [](const char* dtype, const char* shape, const char* offsets) {
    return fmt::format(R"({{"dtype":"{}","shape":{},"data_offsets":{}}})", dtype, shape, offsets);
  };
  std::vector<CorruptCase> c;
  c.push_back({"too_short", std::string("\x05\x00\x00", 3), {"too short", "8-byte header length"}});
  c.push_back({"header_past_eof", raw_file("{}", 0).replace(0, 1, "\xff"), {"header length 255 runs past the end"}});
  {
    std::string f = raw_file(R"({"a":{}})", 0);
    f[6] = '\x01';  // an absurd length, far past the end
    c.push_back({"header_length_huge", f, {"runs past the end of the file"}});
  }
  c.push_back({"not_json", raw_file("{not json}", 0), {"header is not valid JSON"}});
  c.push_back({"not_object", raw_file("[1, 2]", 0), {"not a JSON object"}});
  c.push_back({"truncated_json", raw_file(R"({"a":{"dtype":"F32")", 0), {"not valid JSON"}});
  c.push_back({"duplicate_name",
               raw_file(R"({"w":)" + entry("U8", "[1]", "[0,1]") + R"(,"w":)" + entry("U8", "[1]", "[1,2]") + "}", 2),
               {"tensor 'w' appears twice"}});
  c.push_back({"unknown_dtype", raw_file(R"({"w":)" + entry("F8_E4M3", "[2]", "[0,2]") + "}", 2),
               {"tensor 'w'", "unsupported dtype 'F8_E4M3'", "supported: F64, F32"}});
  c.push_back({"offsets_out_of_bounds", raw_file(R"({"w":)" + entry("F32", "[4]", "[0,16]") + "}", 8),
               {"tensor 'w'", "run past the data section (8 bytes)"}});
  c.push_back({"offsets_reversed", raw_file(R"({"w":)" + entry("U8", "[0]", "[4,2]") + "}", 4),
               {"tensor 'w'", "end before they begin"}});
  c.push_back({"overlap",
               raw_file(R"({"a":)" + entry("F32", "[2]", "[0,8]") + R"(,"b":)" + entry("F32", "[2]", "[4,12]") + "}", 12),
               {"'a' [0, 8)", "'b' [4, 12)", "overlap"}});
  c.push_back({"gap",
               raw_file(R"({"a":)" + entry("F32", "[1]", "[0,4]") + R"(,"b":)" + entry("F32", "[1]", "[8,12]") + "}", 12),
               {"4 unused bytes before tensor 'b'"}});
  c.push_back({"trailing_bytes", raw_file(R"({"a":)" + entry("F32", "[1]", "[0,4]") + "}", 9),
               {"data section has 9 bytes but its tensors cover 4"}});
  c.push_back({"shape_mismatch", raw_file(R"({"w":)" + entry("F32", "[3,2]", "[0,20]") + "}", 20),
               {"tensor 'w'", "shape [3, 2] of F32 needs 24 bytes but data_offsets span 20"}});
  c.push_back({"shape_overflow",
               raw_file(R"({"w":)" + entry("F32", "[4294967296,4294967296]", "[0,4]") + "}", 4),
               {"tensor 'w'", "more than 2^64"}});
  c.push_back({"negative_dim", raw_file(R"({"w":)" + entry("F32", "[-1]", "[0,4]") + "}", 4),
               {"tensor 'w'", "shape must hold non-negative integers"}});
  c.push_back({"missing_field", raw_file(R"({"w":{"dtype":"F32","shape":[1]}})", 4),
               {"tensor 'w'", "missing 'data_offsets'"}});
  c.push_back({"extra_field", raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4),
               {"tensor 'w'", "unknown field 'x'"}});
  c.push_back({"bad_metadata", raw_file(R"({"__metadata__":{"a":1}})", 0), {"__metadata__ key 'a' must be a string"}});
  c.push_back({"empty_header", raw_file("", 0), {"not a JSON object"}});
  return c;
}

TEST_P(SafetensorsCorrupt, IsOneClearError) {
  const CorruptCase c = corrupt_cases()[GetParam()];
  SCOPED_TRACE(c.name);
  TempDir dir;
  std::string path = dir.file(std::string(c.name) + ".safetensors");
  test::write_bytes(path, c.bytes);
  try {
    SafetensorsCheckpoint::open(path);
    ADD_FAILURE() << c.name << ": no error";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    for (const auto& part : c.message) EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
  }
}

INSTANTIATE_TEST_SUITE_P(AllCases, SafetensorsCorrupt,
                         ::testing::Range(0, static_cast<int>(corrupt_cases().size())),
                         [](const auto& info) { return std::string(corrupt_cases()[info.param].name); });

TEST(Safetensors, MissingFileAndUnknownTensor) {
  TempDir dir;
  expect_error([&] { SafetensorsCheckpoint::open(dir.file("nope.safetensors")); },
               {"nope.safetensors", "no such file"});
  write_safetensors(dir.file("a.safetensors"), {{"x", at::ones({1})}});
  auto ck = SafetensorsCheckpoint::open(dir.file("a.safetensors"));
  expect_error([&] { ck.tensor("y"); }, {"no tensor named 'y'"});
}

// --- sharded folders ---

void write_index(const std::string& path, const nlohmann::json& weight_map) {
  test::write_bytes(path, nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());
}

TEST(SafetensorsSharded, ReadsAllShardsThroughTheIndex) {
  TempDir dir;
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"a", at::ones({2})}, {"b", at::zeros({3}, at::kHalf)}});
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), {{"c", at::arange(4, at::kLong)}});
  write_index(dir.file("model.safetensors.index.json"),
              {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00001-of-00002.safetensors"},
               {"c", "model-00002-of-00002.safetensors"}});
  auto ck = SafetensorsCheckpoint::open(dir.path().string());
  ASSERT_EQ(ck.tensors().size(), 3u);
  EXPECT_EQ(ck.shards().size(), 2u);
  EXPECT_EQ(ck.entry("c").shard, "model-00002-of-00002.safetensors");
  EXPECT_TRUE(at::equal(ck.tensor("c"), at::arange(4, at::kLong)));
  EXPECT_TRUE(at::equal(ck.tensor("a"), at::ones({2})));
  EXPECT_EQ(ck.total_bytes(), 8u + 6u + 32u);
}

TEST(SafetensorsSharded, IndexNamingAMissingShard) {
  TempDir dir;
  write_safetensors(dir.file("s1.safetensors"), {{"a", at::ones({2})}});
  write_index(dir.file("model.safetensors.index.json"), {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}});
  expect_error([&] { SafetensorsCheckpoint::open(dir.path().string()); },
               {"model.safetensors.index.json", "tensor 'b'", "shard 's2.safetensors', which does not exist"});
}

TEST(SafetensorsSharded, IndexNamingATensorTheShardLacks) {
  TempDir dir;
  write_safetensors(dir.file("s1.safetensors"), {{"a", at::ones({2})}});
  write_index(dir.file("model.safetensors.index.json"), {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}});
  expect_error([&] { SafetensorsCheckpoint::open(dir.path().string()); },
               {"maps tensor 'b'", "s1.safetensors", "does not hold it"});
}

TEST(SafetensorsSharded, ShardHoldingATensorTheIndexLacks) {
  TempDir dir;
  write_safetensors(dir.file("s1.safetensors"), {{"a", at::ones({2})}, {"extra", at::ones({1})}});
  write_index(dir.file("model.safetensors.index.json"), {{"a", "s1.safetensors"}});
  expect_error([&] { SafetensorsCheckpoint::open(dir.path().string()); },
               {"s1.safetensors", "holds tensor 'extra'"});
}

TEST(SafetensorsSharded, ATensorInTwoShards) {
  TempDir dir;
  write_safetensors(dir.file("s1.safetensors"), {{"a", at::ones({2})}});
  write_safetensors(dir.file("s2.safetensors"), {{"a", at::ones({2})}, {"b", at::ones({1})}});
  write_index(dir.file("model.safetensors.index.json"), {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}});
  expect_error([&] { SafetensorsCheckpoint::open(dir.path().string()); },
               {"s2.safetensors", "holds tensor 'a'", "does not map to this shard"});
}

TEST(SafetensorsSharded, CorruptIndexAndAmbiguousFolder) {
  TempDir dir;
  test::write_bytes(dir.file("model.safetensors.index.json"), "{\"weight_map\": ");
  expect_error([&] { SafetensorsCheckpoint::open(dir.path().string()); },
               {"model.safetensors.index.json", "not valid JSON"});
  test::write_bytes(dir.file("model.safetensors.index.json"), R"({"weight_map": {"a": 3}})");
  expect_error([&] { SafetensorsCheckpoint::open(dir.path().string()); }, {"weight_map entry 'a'"});
  std::filesystem::remove(dir.file("model.safetensors.index.json"));
  expect_error([&] { SafetensorsCheckpoint::open(dir.path().string()); }, {"need exactly one"});
  write_safetensors(dir.file("one.safetensors"), {{"a", at::ones({2})}});
  EXPECT_EQ(SafetensorsCheckpoint::open(dir.path().string()).tensors().size(), 1u);
}

TEST(SafetensorsSharded, CorruptShardNamesTheShard) {
  TempDir dir;
  write_safetensors(dir.file("s1.safetensors"), {{"a", at::ones({2})}});
  test::write_bytes(dir.file("s2.safetensors"), raw_file("{oops", 0));
  write_index(dir.file("model.safetensors.index.json"), {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}});
  expect_error([&] { SafetensorsCheckpoint::open(dir.path().string()); }, {"s2.safetensors", "not valid JSON"});
}

}  // namespace
}  // namespace calibq
