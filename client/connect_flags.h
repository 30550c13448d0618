#ifndef FERRY_CLIENT_CONNECT_FLAGS_H_
#define FERRY_CLIENT_CONNECT_FLAGS_H_

// --tls_ca, --tls_cert, --tls_key, --tls_server_name and --token_file as
// Abseil flags, for the daemons and tools that parse Abseil flags
// (ferry-worker, ferry-bench). `ferry` has its own parser. Link
// ferry_connect_flags.

#include "absl/status/statusor.h"
#include "client/connect.h"

namespace ferry {

// The ConnectOptions the flags (and, for those not given, the environment)
// say; ResolveConnectOptions's errors.
absl::StatusOr<ConnectOptions> ConnectOptionsFromFlags();

}  // namespace ferry

#endif  // FERRY_CLIENT_CONNECT_FLAGS_H_
