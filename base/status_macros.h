#ifndef FERRY_BASE_STATUS_MACROS_H_
#define FERRY_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Abseil 20220623 has no public RETURN_IF_ERROR; these are ours.

// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function if it is not OK.
#define FERRY_RETURN_IF_ERROR(expr)                                 \
  do {                                                              \
    if (absl::Status _ferry_status = (expr); !_ferry_status.ok()) { \
      return _ferry_status;                                         \
    }                                                               \
  } while (0)

#define FERRY_STATUS_CONCAT_INNER_(a, b) a##b
#define FERRY_STATUS_CONCAT_(a, b) FERRY_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::StatusOr<T>); on error returns its status, else
// moves the value into `lhs` (which may be a declaration: `auto x`).
#define FERRY_ASSIGN_OR_RETURN(lhs, expr)                                  \
  FERRY_ASSIGN_OR_RETURN_IMPL_(FERRY_STATUS_CONCAT_(_ferry_or_, __LINE__), \
                               lhs, expr)
#define FERRY_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

#endif  // FERRY_BASE_STATUS_MACROS_H_
