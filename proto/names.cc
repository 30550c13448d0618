#include "proto/names.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace ferry {

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

absl::Status ValidateName(absl::string_view what, absl::string_view name,
                          size_t max_length) {
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is required"));
  }
  bool valid = name.size() <= max_length &&
               absl::ascii_isalnum(static_cast<unsigned char>(name[0]));
  for (char c : name) valid = valid && IsNameChar(c);
  if (!valid) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " \"", absl::CEscape(name.substr(0, 64)),
        name.size() > 64 ? "...\"" : "\"", " is invalid: use 1-", max_length,
        " characters of A-Z a-z 0-9 . _ : - starting with a letter or digit"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, std::string>> ParseLabelFlag(
    absl::string_view item) {
  const size_t eq = item.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--label wants key=value, got \"", item, "\""));
  }
  return std::make_pair(std::string(item.substr(0, eq)),
                        std::string(item.substr(eq + 1)));
}

}  // namespace ferry
