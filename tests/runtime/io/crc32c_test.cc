// Crc32c: published check values (RFC 3720 appendix B.4, the CRC catalogue), a bit-at-a-time
// reference on every length and alignment around the 8-byte slicing, and incremental == one-shot.
#include "runtime/io/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace loom::runtime::io {
namespace {

std::string Bytes(std::initializer_list<int> values) {
  std::string s;
  for (int v : values) s.push_back(static_cast<char>(v));
  return s;
}

// The definition, one bit at a time: reflected Castagnoli polynomial, inverted in and out.
uint32_t BitwiseCrc32c(absl::string_view data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

struct KnownVector {
  const char* what;
  std::string data;
  uint32_t crc;
};

TEST(Crc32cTest, KnownVectors) {
  std::string ascending, descending;
  for (int i = 0; i < 32; ++i) {
    ascending.push_back(static_cast<char>(i));
    descending.push_back(static_cast<char>(31 - i));
  }
  const std::vector<KnownVector> vectors = {
      {"empty", "", 0x00000000u},
      {"check string 123456789", "123456789", 0xE3069283u},
      {"32 zero bytes", std::string(32, '\0'), 0x8A9136AAu},
      {"32 0xFF bytes", std::string(32, '\xFF'), 0x62A8AB43u},
      {"32 ascending bytes", ascending, 0x46DD794Eu},
      {"32 descending bytes", descending, 0x113FDB5Cu},
      {"iSCSI read PDU",
       Bytes({0x01, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
              0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
              0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
              0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}),
       0xD9963A56u},
  };
  for (const KnownVector& v : vectors) {
    EXPECT_EQ(Crc32c(v.data), v.crc) << v.what;
    EXPECT_EQ(BitwiseCrc32c(v.data), v.crc) << v.what << " (reference)";
  }
  EXPECT_EQ(Crc32c(absl::string_view(nullptr, 0)), 0u);
  EXPECT_EQ(Crc32c("", 0x12345678u), 0x12345678u);  // extending by nothing changes nothing
}

TEST(Crc32cTest, MatchesBitwiseReferenceAtEveryLengthAndAlignment) {
  std::string buffer(300, '\0');
  uint32_t state = 12345;
  for (char& c : buffer) {
    state = state * 1664525u + 1013904223u;
    c = static_cast<char>(state >> 24);
  }
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t n = 0; n + offset <= 100; ++n) {
      const absl::string_view piece(buffer.data() + offset, n);
      ASSERT_EQ(Crc32c(piece), BitwiseCrc32c(piece)) << "offset " << offset << " length " << n;
    }
  }
  EXPECT_EQ(Crc32c(buffer), BitwiseCrc32c(buffer));
}

TEST(Crc32cTest, IncrementalEqualsOneShot) {
  EXPECT_EQ(Crc32c("56789", Crc32c("1234")), 0xE3069283u);
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 13);
  const uint32_t whole = Crc32c(data);
  for (size_t split : {0, 1, 7, 8, 9, 63, 500, 999, 1000}) {
    const absl::string_view a(data.data(), split);
    const absl::string_view b(data.data() + split, data.size() - split);
    EXPECT_EQ(Crc32c(b, Crc32c(a)), whole) << "split at " << split;
  }
  uint32_t bytewise = 0;
  for (char c : data) bytewise = Crc32c(absl::string_view(&c, 1), bytewise);
  EXPECT_EQ(bytewise, whole);
}

TEST(Crc32cTest, DetectsEverySingleBitFlip) {
  std::string data = "loom checkpoint manifest";
  const uint32_t original = Crc32c(data);
  for (size_t i = 0; i < data.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      data[i] = static_cast<char>(data[i] ^ (1 << bit));
      EXPECT_NE(Crc32c(data), original) << "byte " << i << " bit " << bit;
      data[i] = static_cast<char>(data[i] ^ (1 << bit));
    }
  }
}

}  // namespace
}  // namespace loom::runtime::io
