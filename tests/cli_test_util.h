#ifndef FERRY_TESTS_CLI_TEST_UTIL_H_
#define FERRY_TESTS_CLI_TEST_UTIL_H_

// Reading what `ferry` printed, for the CLI's tests in process
// (integration/cli_test.cc) and end to end (e2e/ferry_cli_test.cc).

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "ferry/v1/jobs.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/proto_test_util.h"

namespace ferry::testing {

// How a `ferry` run ended.
struct CliRun {
  int code = -1;
  std::string out;  // stdout only
  std::string all;  // stdout and stderr
};

// A CliRun that exited with `code` and printed `text` (stdout or stderr).
MATCHER_P2(ExitsWith, code, text,
           absl::StrCat("exits ", code, " printing \"", text, "\"")) {
  *result_listener << "exited " << arg.code << " printing:\n" << arg.all;
  return arg.code == code && absl::StrContains(arg.all, text);
}

// Parses what `ferry --json` printed into the message it stands for; a
// failed test if it is not exactly that message as JSON.
template <typename Message>
Message ParseJson(absl::string_view json) {
  Message message;
  google::protobuf::util::Status status =
      google::protobuf::util::JsonStringToMessage(
          std::string(absl::StripAsciiWhitespace(json)), &message);
  EXPECT_TRUE(status.ok()) << status.ToString() << " in:\n" << json;
  return message;
}

// What a `ferry --json ...` that must succeed printed, as the message.
template <typename Message>
Message JsonOf(const CliRun& run) {
  EXPECT_EQ(run.code, 0) << run.all;
  return ParseJson<Message>(run.out);
}

// The id a `ferry submit` that must succeed printed.
inline std::string SubmittedId(const CliRun& run) {
  EXPECT_EQ(run.code, 0) << run.all;
  EXPECT_THAT(run.out, ::testing::MatchesRegex("[0-9]+\n")) << run.all;
  return std::string(absl::StripTrailingAsciiWhitespace(run.out));
}

// The non-empty lines of `text`.
inline std::vector<std::string> Lines(absl::string_view text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// The cells of the table row whose first cell is `first`; empty if none.
inline std::vector<std::string> Row(absl::string_view table,
                                    absl::string_view first) {
  for (const std::string& line : Lines(table)) {
    std::vector<std::string> cells =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!cells.empty() && cells[0] == first) return cells;
  }
  return {};
}

}  // namespace ferry::testing

#endif  // FERRY_TESTS_CLI_TEST_UTIL_H_
