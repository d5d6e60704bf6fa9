#include "scanserve/client_tensor.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace scanserve {
namespace {

using ::testing::HasSubstr;

std::string Bytes(std::initializer_list<int> bytes) {
  std::string out;
  for (int b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

uint64_t FreshSeed() { return (uint64_t{std::random_device{}()} << 32) | std::random_device{}(); }

TEST(ClientTensorTest, Float32BytesAreLittleEndianIeee) {
  v1::Tensor t = MakeTensor(std::vector<float>{1.0f, -2.5f}, {2}, DType::kFloat32).value();
  EXPECT_EQ(t.dtype(), v1::FLOAT32);
  EXPECT_EQ(t.layout(), v1::BDL);
  EXPECT_THAT(t.shape(), ::testing::ElementsAre(2));
  EXPECT_EQ(t.data(), Bytes({0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0}));
}

TEST(ClientTensorTest, Float16BytesRoundToNearestEven) {
  // 1, -2, 65504 (largest half), 2^-24 (smallest subnormal), 1e-8 (flushes to zero),
  // 1 + 2^-11 (a tie: rounds to the even 1.0), 1 + 3 * 2^-11 (a tie: rounds up to even).
  const std::vector<float> values = {1.0f,
                                     -2.0f,
                                     65504.0f,
                                     std::ldexp(1.0f, -24),
                                     1e-8f,
                                     1.0f + std::ldexp(1.0f, -11),
                                     1.0f + 3 * std::ldexp(1.0f, -11)};
  v1::Tensor t = MakeTensor(values, {1, 7}, DType::kFloat16, Layout::kBLD).value();
  EXPECT_EQ(t.dtype(), v1::FLOAT16);
  EXPECT_EQ(t.layout(), v1::BLD);
  EXPECT_EQ(t.data(), Bytes({0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00, 0x00, 0x00, 0x00, 0x3c,
                             0x02, 0x3c}));
  EXPECT_THAT(TensorToFloats(t).value(),
              ::testing::ElementsAre(1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24), 0.0f, 1.0f,
                                     1.0f + std::ldexp(1.0f, -9)));
}

TEST(ClientTensorTest, BFloat16BytesRoundToNearestEven) {
  // 1, -3, 1 + 2^-8 (tie, stays 1), 1 + 3 * 2^-8 (tie, rounds up to the even 1 + 2^-6).
  const std::vector<float> values = {1.0f, -3.0f, 1.0f + std::ldexp(1.0f, -8),
                                     1.0f + 3 * std::ldexp(1.0f, -8)};
  v1::Tensor t = MakeTensor(values, {4}, DType::kBFloat16).value();
  EXPECT_EQ(t.data(), Bytes({0x80, 0x3f, 0x40, 0xc0, 0x80, 0x3f, 0x82, 0x3f}));
}

TEST(ClientTensorTest, IntegerBytesAreLittleEndianTwosComplement) {
  v1::Tensor t32 = MakeTensor(std::vector<int32_t>{-1, 0x01020304}, {2}, DType::kInt32).value();
  EXPECT_EQ(t32.data(), Bytes({0xff, 0xff, 0xff, 0xff, 0x04, 0x03, 0x02, 0x01}));
  v1::Tensor t64 =
      MakeTensor(std::vector<int64_t>{-2, int64_t{0x0102030405060708}}, {2}, DType::kInt64).value();
  EXPECT_EQ(t64.data(), Bytes({0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x08, 0x07, 0x06,
                               0x05, 0x04, 0x03, 0x02, 0x01}));
  EXPECT_THAT(TensorToInts(t64).value(), ::testing::ElementsAre(-2, 0x0102030405060708));
}

TEST(ClientTensorTest, EveryHalfAndBFloat16BitPatternSurvivesARoundTrip) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f16 = HalfToFloat(bits);
    if (!std::isnan(f16)) {
      std::string data = Bytes({static_cast<int>(h & 0xff), static_cast<int>(h >> 8)});
      v1::Tensor t = MakeTensor(std::vector<float>{f16}, {1}, DType::kFloat16).value();
      ASSERT_EQ(t.data(), data) << "half bits 0x" << std::hex << h;
    }
    const float b16 = BFloat16ToFloat(bits);
    if (!std::isnan(b16)) {
      v1::Tensor t = MakeTensor(std::vector<float>{b16}, {1}, DType::kBFloat16).value();
      ASSERT_EQ(TensorToFloats(t).value()[0], b16) << "bfloat16 bits 0x" << std::hex << h;
    }
  }
}

TEST(ClientTensorTest, RandomFloatRoundTripsStayWithinHalfAnUlp) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1000.0f, 1000.0f);
  std::vector<float> values(4099);
  for (float& v : values) v = dist(rng);
  const std::vector<int64_t> good_shape = {1, 4099, 1};  // 4099: prime, odd

  struct Case {
    DType dtype;
    double max_rel;  // half an ulp relative to the value
    v1::DType proto;
  };
  for (const Case& c : {Case{DType::kFloat32, 0.0, v1::FLOAT32},
                        Case{DType::kFloat16, std::ldexp(1.0, -11), v1::FLOAT16},
                        Case{DType::kBFloat16, std::ldexp(1.0, -8), v1::BFLOAT16}}) {
    SCOPED_TRACE(std::string(DTypeName(c.dtype)));
    v1::Tensor t = MakeTensor(values, good_shape, c.dtype).value();
    EXPECT_EQ(t.dtype(), c.proto);
    EXPECT_EQ(t.data().size(), values.size() * DTypeSize(c.dtype));
    const std::vector<float> back = TensorToFloats(t).value();
    ASSERT_EQ(back.size(), values.size());
    const std::vector<float> rounded = RoundTrip(values, c.dtype);
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_EQ(back[i], rounded[i]) << "index " << i;
      ASSERT_LE(std::abs(static_cast<double>(back[i]) - values[i]),
                c.max_rel * std::abs(static_cast<double>(values[i])))
          << "index " << i << " value " << values[i];
    }
    // Values the dtype holds exactly come back bit for bit.
    EXPECT_EQ(TensorToFloats(MakeTensor(rounded, good_shape, c.dtype).value()).value(), rounded);
  }
}

TEST(ClientTensorTest, RandomIntegersRoundTripExactly) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<int64_t> v64(1001);
  for (int64_t& v : v64) v = static_cast<int64_t>(rng());
  v64[0] = std::numeric_limits<int64_t>::min();
  v64[1] = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(TensorToInts(MakeTensor(v64, {7, 11, 13}, DType::kInt64).value()).value(), v64);

  std::vector<int32_t> v32(1001);
  for (int32_t& v : v32) v = static_cast<int32_t>(rng());
  v32[0] = std::numeric_limits<int32_t>::min();
  const std::vector<int64_t> back =
      TensorToInts(MakeTensor(v32, {1001}, DType::kInt32).value()).value();
  ASSERT_EQ(back.size(), v32.size());
  for (size_t i = 0; i < v32.size(); ++i) ASSERT_EQ(back[i], v32[i]) << "index " << i;
}

TEST(ClientTensorTest, IntegralFloatsFillIntegerTensors) {
  v1::Tensor t =
      MakeTensor(std::vector<float>{-3.0f, 0.0f, 16777216.0f}, {3}, DType::kInt64).value();
  EXPECT_THAT(TensorToInts(t).value(), ::testing::ElementsAre(-3, 0, 16777216));
  // Integers into a float tensor convert.
  v1::Tensor f = MakeTensor(std::vector<int64_t>{-7, 3}, {2}, DType::kFloat16).value();
  EXPECT_THAT(TensorToFloats(f).value(), ::testing::ElementsAre(-7.0f, 3.0f));
}

TEST(ClientTensorTest, SizeMismatchesAndBadValuesAreInvalidArgument) {
  absl::StatusOr<v1::Tensor> t = MakeTensor(std::vector<float>{1, 2, 3}, {2, 2}, DType::kFloat32);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("3 values"));
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("(2, 2)"));

  t = MakeTensorFromBytes(std::string(7, '\0'), {2}, DType::kFloat32);
  ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("needs 8"));
  EXPECT_TRUE(MakeTensorFromBytes(std::string(8, '\0'), {2}, DType::kFloat32).ok());

  t = MakeTensor(std::vector<float>{}, {3, -1}, DType::kFloat32);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("negative"));
  EXPECT_EQ(ElementCount({int64_t{1} << 40, int64_t{1} << 40}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ElementCount({}).value(), 1);
  EXPECT_EQ(ElementCount({5, 0, int64_t{1} << 62}).value(), 0);

  EXPECT_EQ(MakeTensor(std::vector<int64_t>{int64_t{1} << 31}, {1}, DType::kInt32).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeTensor(std::vector<float>{0.5f}, {1}, DType::kInt32).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeTensor(std::vector<float>{2147483648.0f}, {1}, DType::kInt32).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeTensor(std::vector<float>{NAN}, {1}, DType::kInt64).status().code(),
            absl::StatusCode::kInvalidArgument);

  v1::Tensor good = MakeTensor(std::vector<float>{1, 2, 3, 4}, {2, 2}, DType::kFloat16).value();
  EXPECT_EQ(TensorToInts(good).status().code(), absl::StatusCode::kInvalidArgument);
  v1::Tensor truncated = good;
  truncated.mutable_data()->pop_back();
  EXPECT_EQ(TensorToFloats(truncated).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckTensor(truncated).status().code(), absl::StatusCode::kInvalidArgument);
  v1::Tensor reshaped = good;
  reshaped.add_shape(2);
  EXPECT_THAT(std::string(CheckTensor(reshaped).status().message()), HasSubstr("needs 16"));
  v1::Tensor untyped = good;
  untyped.set_dtype(v1::DTYPE_UNSPECIFIED);
  EXPECT_EQ(TensorToFloats(untyped).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckTensor(good).value(), 4);
}

TEST(ClientTensorTest, NonFiniteFloatsKeepTheirClass) {
  const float inf = std::numeric_limits<float>::infinity();
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const std::vector<float> back =
        TensorToFloats(MakeTensor(std::vector<float>{NAN, inf, -inf}, {3}, dtype).value()).value();
    EXPECT_TRUE(std::isnan(back[0]));
    EXPECT_EQ(back[1], inf);
    EXPECT_EQ(back[2], -inf);
  }
  // Past the largest half, values round to infinity.
  EXPECT_EQ(TensorToFloats(MakeTensor(std::vector<float>{70000.0f}, {1}, DType::kFloat16).value())
                .value()[0],
            inf);
}

TEST(ClientTensorTest, EnumsMapBothWays) {
  for (DType d :
       {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kInt32, DType::kInt64}) {
    EXPECT_EQ(FromProto(ToProto(d)).value(), d);
  }
  for (Layout l : {Layout::kBDL, Layout::kBLD}) EXPECT_EQ(FromProto(ToProto(l)).value(), l);
  EXPECT_EQ(FromProto(v1::DTYPE_UNSPECIFIED).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromProto(v1::LAYOUT_UNSPECIFIED).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromProto(static_cast<v1::DType>(42)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace scanserve
