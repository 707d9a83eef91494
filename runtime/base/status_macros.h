// Status propagation macros. Abseil 20220623 ships Status/StatusOr but no macros to propagate them,
// so loom defines its own.
//
//   absl::StatusOr<Tensor> LoadTensor(const std::string& path);
//   absl::Status Run() {
//     LOOM_RETURN_IF_ERROR(CheckConfig(config));
//     LOOM_ASSIGN_OR_RETURN(Tensor t, LoadTensor("w.bin"));
//     return absl::OkStatus();
//   }
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LOOM_STATUS_CONCAT_INNER(a, b) a##b
#define LOOM_STATUS_CONCAT(a, b) LOOM_STATUS_CONCAT_INNER(a, b)

// Evaluates `expr` (an absl::Status) once and returns it from the enclosing function if not OK.
#define LOOM_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status loom_status_ = (expr);        \
    if (!loom_status_.ok()) return loom_status_; \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, otherwise moves the value
// into `lhs`, which may be a declaration (`auto x`, `Tensor t`) or an existing variable.
#define LOOM_ASSIGN_OR_RETURN(lhs, rexpr) \
  LOOM_ASSIGN_OR_RETURN_IMPL(LOOM_STATUS_CONCAT(loom_statusor_, __LINE__), lhs, rexpr)

#define LOOM_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                               \
  if (!tmp.ok()) return std::move(tmp).status();    \
  lhs = std::move(tmp).value()
