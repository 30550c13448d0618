#ifndef FERRY_PROTO_GRPC_STATUS_H_
#define FERRY_PROTO_GRPC_STATUS_H_

// absl::Status inside, gRPC status at the edge. The two enums share values,
// so conversion is a cast; the asserts keep that true.

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace ferry {

static_assert(static_cast<int>(absl::StatusCode::kInvalidArgument) ==
              grpc::StatusCode::INVALID_ARGUMENT);
static_assert(static_cast<int>(absl::StatusCode::kFailedPrecondition) ==
              grpc::StatusCode::FAILED_PRECONDITION);
static_assert(static_cast<int>(absl::StatusCode::kUnauthenticated) ==
              grpc::StatusCode::UNAUTHENTICATED);

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

}  // namespace ferry

#endif  // FERRY_PROTO_GRPC_STATUS_H_
