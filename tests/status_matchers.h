#ifndef FERRY_TESTS_STATUS_MATCHERS_H_
#define FERRY_TESTS_STATUS_MATCHERS_H_

// gmock matchers for absl::Status and absl::StatusOr (Abseil 20220623 ships
// none): EXPECT_THAT(s, IsOk()); EXPECT_THAT(s, StatusIs(kNotFound)).

#include <ostream>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace ferry::testing {

inline const absl::Status& GetStatus(const absl::Status& status) {
  return status;
}
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& status = GetStatus(arg);
  if (!status.ok()) *result_listener << "status is " << status;
  return status.ok();
}

MATCHER_P(StatusIs, code, "has status code " + absl::StatusCodeToString(code)) {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "status is " << status;
  return status.code() == code;
}

MATCHER_P2(StatusIs, code, message_matcher,
           "has status code " + absl::StatusCodeToString(code)) {
  const absl::Status& status = GetStatus(arg);
  *result_listener << "status is " << status;
  return status.code() == code &&
         ::testing::ExplainMatchResult(
             message_matcher, std::string(status.message()), result_listener);
}

}  // namespace ferry::testing

// Unwraps a StatusOr in a test, failing the test (fatally) if it is an error.
#define FERRY_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  FERRY_ASSERT_OK_AND_ASSIGN_IMPL_(           \
      FERRY_TEST_CONCAT_(_ferry_test_or_, __LINE__), lhs, expr)
#define FERRY_TEST_CONCAT_INNER_(a, b) a##b
#define FERRY_TEST_CONCAT_(a, b) FERRY_TEST_CONCAT_INNER_(a, b)
#define FERRY_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  ASSERT_TRUE(tmp.ok()) << tmp.status();                 \
  lhs = std::move(tmp).value()

#endif  // FERRY_TESTS_STATUS_MATCHERS_H_
