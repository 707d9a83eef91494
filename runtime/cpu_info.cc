#include "runtime/cpu_info.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace loom::runtime {
namespace {

CpuInfo ReadCpuInfo() {
  CpuInfo info{.model = "unknown", .vendor = "unknown"};
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    const std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits(':', 1));
    const absl::string_view key = absl::StripAsciiWhitespace(kv.first);
    const absl::string_view value = absl::StripAsciiWhitespace(kv.second);
    if (key == "model name") info.model = std::string(value);
    if (key == "vendor_id") info.vendor = std::string(value);
    if (key != "flags") continue;
    for (absl::string_view flag : absl::StrSplit(value, ' ')) {
      if (flag == "avx2") info.avx2 = true;
      if (flag == "avx512f") info.avx512f = true;
      if (flag == "avx512_bf16") info.avx512_bf16 = true;
      if (flag == "amx_bf16") info.amx_bf16 = true;
    }
    break;  // the first processor's block describes them all
  }
  return info;
}

}  // namespace

std::string CpuInfo::Summary() const {
  std::vector<std::string> features;
  if (avx2) features.push_back("avx2");
  if (avx512f) features.push_back("avx512f");
  if (avx512_bf16) features.push_back("avx512_bf16");
  if (amx_bf16) features.push_back("amx_bf16");
  return absl::StrCat(model, " (", vendor, "; ",
                      features.empty() ? "-" : absl::StrJoin(features, " "), ")");
}

const CpuInfo& HostCpu() {
  static const CpuInfo* info = new CpuInfo(ReadCpuInfo());
  return *info;
}

}  // namespace loom::runtime
