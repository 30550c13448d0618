#include "server/queue_config.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "base/config_lines.h"

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
  for (const ConfigLine& config_line : ConfigLines(text)) {
    const int number = config_line.number;
    const std::vector<absl::string_view>& words = config_line.words;
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
      // Parsed here; ValidatePolicy below checks the ranges.
      absl::Duration d;
      const bool is_duration = absl::ParseDuration(value, &d);
      if (key == "max_attempts") {
        if (!absl::SimpleAtoi(value, &policy.max_attempts)) {
          return LineError(number, "max_attempts must be a whole number");
        }
      } else if (key == "lease_ttl" || key == "initial_backoff" ||
                 key == "max_backoff") {
        if (!is_duration) {
          return LineError(number,
                           absl::StrCat(key, " must be a duration like 30s"));
        }
        (key == "lease_ttl"         ? policy.lease_ttl
         : key == "initial_backoff" ? policy.initial_backoff
                                    : policy.max_backoff) = d;
      } else {
        return LineError(number, absl::StrCat("unknown key \"", key,
                                              "\" (lease_ttl, max_attempts, "
                                              "initial_backoff, max_backoff)"));
      }
    }
    if (absl::Status s = ValidatePolicy(policy, ""); !s.ok()) {
      return LineError(number, s.message());
    }
    policies.emplace(queue, policy);
  }
  return policies;
}

}  // namespace ferry
