#include "server/queue_config.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"

namespace ferry {
namespace {

absl::Status LineError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("queue config line ", line, ": ", what));
}

}  // namespace

absl::StatusOr<std::map<std::string, JobPolicy>> ParseQueueConfig(
    absl::string_view text, const JobPolicy& defaults) {
  std::map<std::string, JobPolicy> policies;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const std::string queue(words[0]);
    if (absl::Status s = ValidateName("queue", queue); !s.ok()) {
      return LineError(number, s.message());
    }
    if (policies.count(queue) > 0) {
      return LineError(number, absl::StrCat("queue ", queue, " appears twice"));
    }
    if (words.size() < 2) {
      return LineError(number, "expected QUEUE KEY=VALUE...");
    }
    JobPolicy policy = defaults;
    for (size_t i = 1; i < words.size(); ++i) {
      std::pair<absl::string_view, absl::string_view> kv =
          absl::StrSplit(words[i], absl::MaxSplits('=', 1));
      const absl::string_view key = kv.first, value = kv.second;
      absl::Duration d;
      const bool is_duration = absl::ParseDuration(value, &d);
      if (key == "max_attempts") {
        int32_t n = 0;
        if (!absl::SimpleAtoi(value, &n) || n < 1 || n > kMaxAttempts) {
          return LineError(
              number, absl::StrCat("max_attempts must be 1..", kMaxAttempts));
        }
        policy.max_attempts = n;
      } else if (key == "lease_ttl") {
        if (!is_duration || d < kMinLeaseTtl || d > kMaxLeaseTtl) {
          return LineError(number, "lease_ttl must be a duration in 1s..24h");
        }
        policy.lease_ttl = d;
      } else if (key == "initial_backoff" || key == "max_backoff") {
        if (!is_duration || d < absl::ZeroDuration() || d > kMaxDelay) {
          return LineError(number,
                           absl::StrCat(key, " must be a duration like 30s"));
        }
        (key == "initial_backoff" ? policy.initial_backoff
                                  : policy.max_backoff) = d;
      } else {
        return LineError(number, absl::StrCat("unknown key \"", key,
                                              "\" (lease_ttl, max_attempts, "
                                              "initial_backoff, max_backoff)"));
      }
    }
    if (policy.max_backoff < policy.initial_backoff) {
      return LineError(number, "max_backoff is below initial_backoff");
    }
    policies.emplace(queue, policy);
  }
  return policies;
}

}  // namespace ferry
