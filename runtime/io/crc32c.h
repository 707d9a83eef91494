// CRC-32C (Castagnoli): the checksum loom's checkpoints record for every file they write.
//
//   uint32_t crc = Crc32c("123456789");                   // 0xE3069283
//   uint32_t part = Crc32c("1234");
//   uint32_t whole = Crc32c("56789", part);               // == Crc32c("123456789")
//   LOOM_CHECK_EQ(whole, crc);
//
// The polynomial is Castagnoli's (reflected 0x82F63B78, the one iSCSI, ext4, RocksDB and
// LevelDB use), with the usual pre- and post-inversion, so values match those tools.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace loom::runtime::io {

// CRC-32C of `data` continuing from `crc`, the CRC-32C of the bytes before it (0 to start), so
// Crc32c(b, Crc32c(a)) == Crc32c(a + b). Host memory; thread-safe; software slicing-by-8 (no
// SSE4.2/ARMv8 CRC instructions yet). For a raw buffer: Crc32c(absl::string_view(ptr, n)).
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);

}  // namespace loom::runtime::io
