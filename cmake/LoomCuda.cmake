# The CUDA backend (issue #14, docs/gpu.md): built when nvcc is found, unless -DLOOM_CUDA=OFF.
# Compiled for sm_80 (A100) and sm_90 (H100 / H200) unless CMAKE_CUDA_ARCHITECTURES says otherwise.
# Sets LOOM_HAVE_CUDA.
option(LOOM_CUDA "Build the CUDA kernels when nvcc is found" ON)
set(LOOM_HAVE_CUDA OFF)
if(LOOM_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 80 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(LOOM_HAVE_CUDA ON)
    message(STATUS "loom: CUDA backend: on (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, "
                   "architectures ${CMAKE_CUDA_ARCHITECTURES})")
  else()
    message(STATUS "loom: CUDA backend: off (no nvcc found)")
  endif()
else()
  message(STATUS "loom: CUDA backend: off (-DLOOM_CUDA=OFF)")
endif()

# A library of CUDA and C++ sources: the C++ flags of loom_library; nvcc's warnings are errors
# and it contracts no multiply-adds (as the CPU kernels, -ffp-contract=off), so a kernel and its
# CPU twin differ only where their math functions do.
function(loom_cuda_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_compile_options(${name} PRIVATE
    "$<$<COMPILE_LANGUAGE:CXX>:${LOOM_WARNINGS};${LOOM_FLOAT_FLAGS}>"
    "$<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings;-Xcompiler=-Wall,-Wextra,-Werror;--fmad=false>")
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  # CMake 3.25 knows no C++20 dialect for nvcc: the .cu files are C++17 (they include only
  # headers written for both).
  set_target_properties(${name} PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()
