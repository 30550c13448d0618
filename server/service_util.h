#ifndef FERRY_SERVER_SERVICE_UTIL_H_
#define FERRY_SERVER_SERVICE_UTIL_H_

// The one shape every unary handler has: validate, call the core, fill the
// response, finish with the status converted at the edge.

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/support/server_callback.h"
#include "proto/grpc_status.h"
#include "storage/store.h"

namespace ferry {

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
