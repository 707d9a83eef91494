// LOOM_HOST_DEVICE marks inline functions that CUDA kernels and host code share (grid arithmetic,
// the formulas of ops with a CPU kernel and a CUDA twin): __host__ __device__ under nvcc, nothing
// for the C++ compiler.
#pragma once

#ifdef __CUDACC__
#define LOOM_HOST_DEVICE __host__ __device__
#else
#define LOOM_HOST_DEVICE
#endif
