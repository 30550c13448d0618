#ifndef FERRY_CLIENT_CLI_FLAGS_H_
#define FERRY_CLIENT_CLI_FLAGS_H_

// The ferry CLI's option parser. A command declares its flags in a table
// (name, value name, one line of help, type); the parser, the value checks
// and the option lines of the help all come from that table, so a new
// command writes no parsing code.
//
//   const std::vector<Flag> flags = {
//       {"timeout", "DURATION", "give up after this long",
//       FlagType::kDuration},
//       {"all", "", "every matching job", FlagType::kSwitch},
//   };
//   ParsedArgs parsed;
//   if (std::optional<FlagError> e = ParseFlags(args, &next, flags,
//                                               StopAt::kEnd, &parsed)) ...
//   absl::Duration timeout =
//   parsed.Duration("timeout").value_or(absl::Hours(1));
//
// Options are spelt in full (no prefix matches): --name VALUE, --name=VALUE,
// or --name for a switch; '_' and '-' in a name are the same (--tls_ca,
// --tls-ca; --call-timeout, --call_timeout), and ParsedArgs knows each flag
// by the name its table gives. Not thread-safe; build, parse and read on one
// thread.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.pb.h"

namespace ferry {

// What a flag's value must be; the parser checks it, so a bad value is a
// usage error before the command runs.
enum class FlagType {
  kSwitch,    // no value
  kString,    // any text
  kAddress,   // HOST:PORT, not empty
  kInt,       // a 32-bit integer
  kCount,     // an integer from 1 to 2^32-1
  kDuration,  // a duration of zero or more: 30s, 5m, 2h
  kTimeout,   // a finite duration above zero
  kTime,      // an RFC 3339 time: 2026-01-02T15:04:05Z
  kState,     // a job state, any case, with or without JOB_STATE_
  kLabels,    // key=value; may repeat
};

struct Flag {
  std::string name;        // without the dashes: "payload-file"
  std::string value_name;  // shown in help ("--payload-file FILE"); "" for
                           // switches
  std::string help;        // one line; "" keeps the flag out of the help
  FlagType type = FlagType::kString;
};

struct FlagError {
  enum class Kind {
    kUnknown,   // no such flag
    kSyntax,    // a value missing, given to a switch, or given twice
    kBadValue,  // not what the flag's type wants
  };
  Kind kind;
  std::string arg;      // the argument as written: "--brokers=x"
  std::string flag;     // the flag's name as written, without dashes
  std::string message;  // "--limit wants a positive integer"
};

enum class StopAt {
  // Read to the end; options and positional arguments may mix, and "--"
  // makes every argument after it positional.
  kEnd,
  // Stop at the first argument that is not an option (the global options
  // before a command); `*next` is left there.
  kPositional,
};

// The arguments of one command line, as the flags declared them. Getters
// return nothing (or `fallback`) for a flag that was not given; the parser
// has already checked every value, so they cannot fail.
class ParsedArgs {
 public:
  std::vector<std::string> positional;

  bool Has(absl::string_view name) const;
  // The text given; "" if absent.
  std::string Get(absl::string_view name) const;
  int64_t Int(absl::string_view name, int64_t fallback) const;
  std::optional<absl::Duration> Duration(absl::string_view name) const;
  std::optional<absl::Time> Time(absl::string_view name) const;
  std::optional<v1::JobState> State(absl::string_view name) const;
  std::map<std::string, std::string> Labels(absl::string_view name) const;

 private:
  friend std::optional<FlagError> ParseFlags(
      const std::vector<std::string>& args, size_t* next,
      const std::vector<Flag>& flags, StopAt stop, ParsedArgs* parsed);
  const std::vector<std::string>* Values(absl::string_view name) const;

  std::map<std::string, std::vector<std::string>, std::less<>> values_;
};

// Parses `args` from `*next` on into `parsed` (which may hold the results of
// an earlier call: values add up). Returns the first error; `*next` is then
// at the argument that caused it.
std::optional<FlagError> ParseFlags(const std::vector<std::string>& args,
                                    size_t* next,
                                    const std::vector<Flag>& flags, StopAt stop,
                                    ParsedArgs* parsed);

// One help line per flag with help, aligned as "  --name VALUE   help".
std::string FlagHelp(const std::vector<Flag>& flags);

}  // namespace ferry

#endif  // FERRY_CLIENT_CLI_FLAGS_H_
