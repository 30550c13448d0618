#ifndef FERRY_SERVER_SERVICE_UTIL_H_
#define FERRY_SERVER_SERVICE_UTIL_H_

// The one shape every unary handler has: validate, call the core, fill the
// response, finish with the status converted at the edge.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/support/server_callback.h"
#include "proto/grpc_status.h"
#include "proto/protocol_limits.h"
#include "storage/store.h"

namespace ferry {

// How full a page of a listing built in memory (QueueStats, ListWorkers)
// is: it holds at most `page_size` items (0: no count limit; above
// kMaxPageSize: kMaxPageSize), and stops growing once its items pass
// kMaxPageBytes (the first always goes).
class PageFill {
 public:
  explicit PageFill(uint32_t page_size)
      : max_items_(page_size == 0 ? UINT32_MAX
                                  : std::min(page_size, kMaxPageSize)) {}
  bool Full() const {
    return items_ == max_items_ || (items_ > 0 && bytes_ > kMaxPageBytes);
  }
  void Add(size_t bytes) {
    ++items_;
    bytes_ += bytes;
  }

 private:
  const uint32_t max_items_;
  uint32_t items_ = 0;
  size_t bytes_ = 0;
};

// Finishes a unary call now.
inline grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx,
                                        const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// A completion for the core: on success `fill(value)` writes the response;
// either way the call finishes with the result's status.
template <typename T, typename Fill>
ResultCallback<T> FinishWith(grpc::ServerUnaryReactor* reactor, Fill fill) {
  return [reactor, fill = std::move(fill)](absl::StatusOr<T> result) mutable {
    if (result.ok()) fill(*result);
    reactor->Finish(ToGrpcStatus(result.status()));
  };
}

}  // namespace ferry

#endif  // FERRY_SERVER_SERVICE_UTIL_H_
