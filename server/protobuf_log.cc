#include "server/protobuf_log.h"

#include <cstdint>
#include <string>

#include "base/log_format.h"
#include "base/log_rate_limiter.h"
#include "google/protobuf/stubs/logging.h"

namespace ferry {
namespace {

constexpr int kLinesPerSecond = 10;

// Set once by RouteProtobufLogs; protobuf's handler is a plain function.
LogRateLimiter* limiter = nullptr;

void Handle(google::protobuf::LogLevel level, const char* filename, int line,
            const std::string& message) {
  int64_t suppressed = 0;
  if (limiter == nullptr || !limiter->Allow(&suppressed)) return;
  const spdlog::level::level_enum spd_level =
      level >= google::protobuf::LOGLEVEL_ERROR ? spdlog::level::err
                                                : spdlog::level::warn;
  spdlog::log(spd_level,
              "protobuf library message=\"{}\" source={}:{} "
              "suppressed_before={}",
              LogValue(message), filename, line, suppressed);
}

}  // namespace

void RouteProtobufLogs(const Clock* clock) {
  delete limiter;
  limiter = new LogRateLimiter(clock, kLinesPerSecond);
  google::protobuf::SetLogHandler(&Handle);
}

}  // namespace ferry
