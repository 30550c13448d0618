#ifndef FERRY_PROTO_NAMES_H_
#define FERRY_PROTO_NAMES_H_

// The protocol's rule for names (queues, kinds, worker ids, label keys),
// shared by the broker, which enforces it, and the clients and workers,
// which check early so the user hears about a typo before any call.

#include <cstddef>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/protocol_limits.h"

namespace ferry {

// A character names may hold anywhere ([A-Za-z0-9._:-]).
bool IsNameChar(char c);

// 1..max_length characters of [A-Za-z0-9._:-], the first a letter or
// digit. INVALID_ARGUMENT names the field (`what`: "queue", "kind", ...)
// and the rule.
absl::Status ValidateName(absl::string_view what, absl::string_view name,
                          size_t max_length = kMaxNameLength);

// One `key=value` given to a --label flag (ferry's and ferry-worker's). The
// value may be empty and may hold '='. INVALID_ARGUMENT quoting `item` if
// it has no '=' or an empty key; the broker checks the rest.
absl::StatusOr<std::pair<std::string, std::string>> ParseLabelFlag(
    absl::string_view item);

}  // namespace ferry

#endif  // FERRY_PROTO_NAMES_H_
