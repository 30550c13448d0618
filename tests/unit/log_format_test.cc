#include "base/log_format.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

TEST(LogValue, EscapesWhatCouldEndAFieldOrALineAndKeepsUtf8) {
  EXPECT_EQ(LogValue("plain text"), "plain text");
  EXPECT_EQ(LogValue("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(LogValue("say \"hi\" \\ bye"), "say \\\"hi\\\" \\\\ bye");
  EXPECT_EQ(LogValue(std::string("nul\0bell\a", 9)), "nul\\000bell\\007");
  EXPECT_EQ(LogValue("grüße"), "grüße");
}

}  // namespace
}  // namespace ferry
