#ifndef FERRY_BASE_LOG_FORMAT_H_
#define FERRY_BASE_LOG_FORMAT_H_

// Lets spdlog/fmt print absl::string_view (Debian's Abseil keeps its own
// string_view type, which fmt does not know). Include instead of spdlog.

#include "absl/strings/string_view.h"
#include "spdlog/spdlog.h"

template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<fmt::string_view> {
  template <typename FormatContext>
  auto format(absl::string_view value, FormatContext& ctx) const {
    return fmt::formatter<fmt::string_view>::format(
        fmt::string_view(value.data(), value.size()), ctx);
  }
};

#endif  // FERRY_BASE_LOG_FORMAT_H_
