#include "absl/strings/match.h"
#include "runtime/device_open.h"

namespace loom::runtime {

double DenseBf16PeakGflops(absl::string_view gpu_name) {
  // First match wins: the more specific names come before the names they contain.
  struct Entry {
    const char* name;
    double gflops;
  };
  static constexpr Entry kTable[] = {
      {"H200", 989'400},     {"H100 PCIe", 756'000}, {"H100", 989'400}, {"H800 PCIe", 756'000},
      {"H800", 989'400},     {"H20", 148'000},       {"A100", 312'000}, {"A800", 312'000},
      {"L40S", 362'050},     {"L40", 181'050},       {"L4", 121'000},   {"A10G", 70'000},
      {"RTX 4090", 165'200},
  };
  for (const Entry& e : kTable) {
    if (absl::StrContains(gpu_name, e.name)) return e.gflops;
  }
  return 0.0;
}

}  // namespace loom::runtime
