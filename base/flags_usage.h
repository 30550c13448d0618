#ifndef FERRY_BASE_FLAGS_USAGE_H_
#define FERRY_BASE_FLAGS_USAGE_H_

#include <string>

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace ferry {

// Sets the --help text of a program and makes --help list the flags
// defined in `main_file` (pass __FILE__), and those of files named
// "*_flags.cc" (flags several programs share, client/connect_flags.cc).
// Abseil otherwise lists only flags from files named after the program,
// and "ferry-worker" does not match "ferry_worker_main.cc": --help printed
// "No flags matched".
// Link absl::flags_usage.
inline void SetUsage(absl::string_view usage, const char* main_file) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  const std::string file = main_file;
  // Abseil hands over the file name without its leading '/'.
  config.contains_help_flags = [file](absl::string_view path) {
    return !path.empty() &&
           (absl::EndsWith(file, path) || absl::EndsWith(path, "_flags.cc"));
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
}

}  // namespace ferry

#endif  // FERRY_BASE_FLAGS_USAGE_H_
