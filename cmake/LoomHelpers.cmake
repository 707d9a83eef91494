# Small helpers so every loom target gets the same flags and layout.
#
#   loom_library(loom_runtime SRCS tensor.cc ... DEPS loom_base absl::status)
#   loom_test(tensor_test SRCS tensor_test.cc DEPS loom_runtime LABELS unit)
#   loom_benchmark(kernels_bench SRCS kernels_bench.cc DEPS loom_runtime)

set(LOOM_WARNINGS -Wall -Wextra -Werror)
# No FMA contraction (results are the same bits whichever instruction set a LOOM_VECTORIZED clone
# uses, runtime/kernels/cpu/vectorize.h); math functions never set errno (sqrt vectorises).
set(LOOM_FLOAT_FLAGS -ffp-contract=off -fno-math-errno)

function(_loom_common target)
  target_compile_options(${target} PRIVATE ${LOOM_WARNINGS} ${LOOM_FLOAT_FLAGS})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()

function(loom_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  if(ARG_SRCS)
    add_library(${name} STATIC ${ARG_SRCS})
    _loom_common(${name})
    target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${PROJECT_SOURCE_DIR})
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
  endif()
endfunction()

# A GoogleTest binary registered with ctest. LABELS: unit, mpi, gpu, slow.
function(loom_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  _loom_common(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()

function(loom_benchmark name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  _loom_common(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark)
endfunction()
