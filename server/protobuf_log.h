#ifndef FERRY_SERVER_PROTOBUF_LOG_H_
#define FERRY_SERVER_PROTOBUF_LOG_H_

#include "base/clock.h"

namespace ferry {

// Sends what the protobuf library logs (it logs a line for every message
// it cannot parse, such as a request with invalid UTF-8 in a string field)
// to spdlog as "protobuf library" warnings, at most 10 lines per second of
// `clock`; a line after a pause says how many were dropped. Without it,
// a client sending bad requests in a loop wrote megabytes per second to
// stderr. Call once at start, before serving (protobuf's SetLogHandler is
// not thread-safe). `clock` is not owned and must outlive every later log.
void RouteProtobufLogs(const Clock* clock);

}  // namespace ferry

#endif  // FERRY_SERVER_PROTOBUF_LOG_H_
