# Finds loom's dependencies. Required: Abseil, OpenBLAS, oneDNN, OpenMP, Open MPI, GoogleTest (tests) and
# Google Benchmark (bench). Optional and only reported for now: CUDA toolkit, NCCL, cuDNN — the
# kernel dispatch has a device seam that the CUDA backend fills in a later change.

find_package(absl REQUIRED CONFIG)
find_package(OpenBLAS REQUIRED CONFIG)
find_package(OpenMP REQUIRED)
find_package(MPI REQUIRED COMPONENTS C)
find_package(Threads REQUIRED)
find_package(nlohmann_json REQUIRED CONFIG)
if(LOOM_BUILD_TESTS)
  find_package(GTest REQUIRED CONFIG)
endif()
if(LOOM_BUILD_BENCH)
  find_package(benchmark REQUIRED CONFIG)
endif()

add_library(loom_openblas INTERFACE)
target_include_directories(loom_openblas SYSTEM INTERFACE ${OpenBLAS_INCLUDE_DIRS})
target_link_libraries(loom_openblas INTERFACE ${OpenBLAS_LIBRARIES})

# oneDNN by hand: Debian's dnnl-config.cmake requires the OpenCL headers, which loom never uses.
find_path(LOOM_DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.h)
find_library(LOOM_DNNL_LIBRARY dnnl)
if(NOT LOOM_DNNL_INCLUDE_DIR OR NOT LOOM_DNNL_LIBRARY)
  message(FATAL_ERROR "loom: oneDNN not found; run scripts/setup.sh (Debian package libdnnl-dev)")
endif()
add_library(loom_onednn INTERFACE)
target_include_directories(loom_onednn SYSTEM INTERFACE ${LOOM_DNNL_INCLUDE_DIR})
target_link_libraries(loom_onednn INTERFACE ${LOOM_DNNL_LIBRARY})
message(STATUS "loom: oneDNN: found (${LOOM_DNNL_LIBRARY})")

message(STATUS "loom: OpenBLAS ${OpenBLAS_VERSION}: found (${OpenBLAS_LIBRARIES})")
message(STATUS "loom: MPI ${MPI_C_VERSION}: found (${MPI_C_LIBRARIES})")
message(STATUS "loom: MPIEXEC: ${MPIEXEC_EXECUTABLE}")

# --- GPU stack: detected and reported (the CUDA kernels: cmake/LoomCuda.cmake). ---
find_package(CUDAToolkit QUIET)
if(CUDAToolkit_FOUND)
  message(STATUS "loom: CUDA toolkit ${CUDAToolkit_VERSION}: found (${CUDAToolkit_BIN_DIR})")
else()
  message(STATUS "loom: CUDA toolkit: not found")
endif()

set(_loom_gpu_hints ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_INCLUDE_DIRS} /usr/local/cuda
    /usr/local)

# Finds header + library of an optional GPU library, sets LOOM_HAVE_<VAR> and reports it.
function(loom_find_gpu_library label var header library)
  find_path(LOOM_${var}_INCLUDE_DIR ${header} HINTS ${_loom_gpu_hints} PATH_SUFFIXES include)
  find_library(LOOM_${var}_LIBRARY ${library} HINTS ${_loom_gpu_hints} PATH_SUFFIXES lib lib64)
  if(LOOM_${var}_INCLUDE_DIR AND LOOM_${var}_LIBRARY)
    message(STATUS "loom: ${label}: found (${LOOM_${var}_LIBRARY})")
    set(LOOM_HAVE_${var} ON PARENT_SCOPE)
  else()
    message(STATUS "loom: ${label}: not found")
    set(LOOM_HAVE_${var} OFF PARENT_SCOPE)
  endif()
endfunction()

loom_find_gpu_library(NCCL NCCL nccl.h nccl)
loom_find_gpu_library(cuDNN CUDNN cudnn.h cudnn)
