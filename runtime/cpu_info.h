// What CPU this process runs on: model name, vendor and the instruction-set features loom's kernels
// choose between. Read once from /proc/cpuinfo (the same text `lscpu` shows).
//
//   const runtime::CpuInfo& cpu = runtime::HostCpu();
//   LOOM_LOG(INFO) << cpu.model << (cpu.amx_bf16 ? " with AMX" : "");
//   metrics["cpu"] = cpu.Summary();     // "AMD EPYC (AuthenticAMD; avx2 avx512f avx512_bf16)"
//
// Benchmarks record Summary() beside every figure: the same binary is fast on one CPU and slow on
// another, and machines of one kind are not all the same CPU.
#pragma once

#include <string>

namespace loom::runtime {

struct CpuInfo {
  std::string model;   // "AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+", "unknown"
  std::string vendor;  // "AuthenticAMD", "GenuineIntel", ...
  bool avx2 = false;
  bool avx512f = false;
  bool avx512_bf16 = false;  // VDPBF16PS: bf16 dot products with f32 accumulation
  bool amx_bf16 = false;     // AMX tiles for bf16 (Sapphire Rapids and later)

  // "<model> (<vendor>; <features>)".
  std::string Summary() const;
};

// The host CPU, read on first use (thread-safe).
const CpuInfo& HostCpu();

}  // namespace loom::runtime
