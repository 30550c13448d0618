#ifndef FERRY_PROTO_RESULT_LIMITS_H_
#define FERRY_PROTO_RESULT_LIMITS_H_

// Limits on a worker's Result that the broker enforces and the worker SDK
// applies before sending, so that both say the same thing.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "proto/protocol_limits.h"

namespace ferry {

// Why an output of `bytes` was not stored, over a limit of `limit` bytes
// (ferryd --max_payload_bytes); the attempt then fails, not retryable.
inline std::string OutputOverLimitError(size_t bytes, int64_t limit) {
  return absl::StrCat("the handler's output is ", bytes,
                      " bytes, over the broker's limit of ", limit,
                      " (--max_payload_bytes); it was not stored");
}

}  // namespace ferry

#endif  // FERRY_PROTO_RESULT_LIMITS_H_
