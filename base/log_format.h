#ifndef FERRY_BASE_LOG_FORMAT_H_
#define FERRY_BASE_LOG_FORMAT_H_

// Lets spdlog/fmt print absl::string_view (Debian's Abseil keeps its own
// string_view type, which fmt does not know), and sets up the daemons'
// logging. Include instead of spdlog.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "spdlog/cfg/env.h"
#include "spdlog/sinks/stdout_color_sinks.h"
#include "spdlog/spdlog.h"

template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename FormatContext>
  auto format(absl::string_view value, FormatContext& ctx) const {
    return fmt::formatter<fmt::string_view>::format(
        fmt::string_view(value.data(), value.size()), ctx);
  }
};

namespace ferry {

// A value for a key="value" log field that came from outside (a client, a
// worker, a handler's stderr): newlines, quotes, backslashes and other
// control bytes are escaped C-style, so it can never forge a log line or a
// field. UTF-8 passes through as is.
inline std::string LogValue(absl::string_view value) {
  return absl::Utf8SafeCEscape(value);
}

// The daemons' logging: one line per event on stderr (stdout is for
// output), UTC timestamps, at `level` (trace..off); SPDLOG_LEVEL overrides.
// INVALID_ARGUMENT for an unknown level.
inline absl::Status ConfigureLogging(const std::string& level) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--log_level must be one of trace, debug, info, warn, error, off; "
        "got \"",
        level, "\""));
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("ferry"));
  spdlog::set_level(parsed);
  spdlog::cfg::load_env_levels();
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v",
                      spdlog::pattern_time_type::utc);
  return absl::OkStatus();
}

}  // namespace ferry

#endif  // FERRY_BASE_LOG_FORMAT_H_
