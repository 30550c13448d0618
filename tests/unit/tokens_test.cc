#include "auth/tokens.h"

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace ferry {
namespace {

using ::ferry::testing::IsOk;
using ::ferry::testing::StatusIs;
using ::testing::HasSubstr;

TEST(GlobTest, MatchesStarsAnywhere) {
  EXPECT_TRUE(GlobMatches("emails", "emails"));
  EXPECT_FALSE(GlobMatches("emails", "emails2"));
  EXPECT_TRUE(GlobMatches("emails*", "emails"));
  EXPECT_TRUE(GlobMatches("emails*", "emails.eu"));
  EXPECT_FALSE(GlobMatches("emails*", "email"));
  EXPECT_TRUE(GlobMatches("*.eu", "emails.eu"));
  EXPECT_FALSE(GlobMatches("*.eu", "emails.us"));
  EXPECT_TRUE(GlobMatches("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(GlobMatches("a*b*c", "aXXbYY"));
  EXPECT_TRUE(GlobMatches("*", "anything"));
}

TEST(RolesTest, AdminAndSubmitIncludeOthers) {
  TokenEntry admin{"a", static_cast<uint8_t>(Role::kAdmin), {}, ""};
  EXPECT_TRUE(admin.Has(Role::kWork));
  EXPECT_TRUE(admin.Has(Role::kRead));
  TokenEntry submit{"s", static_cast<uint8_t>(Role::kSubmit), {}, ""};
  EXPECT_TRUE(submit.Has(Role::kRead));
  EXPECT_FALSE(submit.Has(Role::kWork));
  EXPECT_FALSE(submit.Has(Role::kAdmin));
  TokenEntry work{"w", static_cast<uint8_t>(Role::kWork), {}, ""};
  EXPECT_FALSE(work.Has(Role::kRead));
  EXPECT_TRUE(work.Has(Role::kWork));
}

TEST(RolesTest, RolesAllowingNamesEveryRoleThatIncludesIt) {
  EXPECT_EQ(RolesAllowing(Role::kRead), "read, submit or admin");
  EXPECT_EQ(RolesAllowing(Role::kSubmit), "submit or admin");
  EXPECT_EQ(RolesAllowing(Role::kWork), "work or admin");
  EXPECT_EQ(RolesAllowing(Role::kAdmin), "admin");
}

TEST(TokenFileTest, RoundTripsAFormattedLine) {
  TokenEntry entry;
  entry.name = "billing";
  entry.roles =
      static_cast<uint8_t>(Role::kSubmit) | static_cast<uint8_t>(Role::kWork);
  entry.queues = {"billing*", "invoices"};
  entry.sha256 = HashSecret("s3cret");
  const std::string line = FormatTokenLine(entry);
  EXPECT_EQ(line.find("s3cret"), std::string::npos);
  absl::StatusOr<std::vector<TokenEntry>> parsed =
      ParseTokenFile("# comment\n\n" + line + "\n");
  ASSERT_THAT(parsed.status(), IsOk());
  ASSERT_EQ(parsed->size(), 1u);
  const TokenEntry& back = parsed->front();
  EXPECT_EQ(back.name, "billing");
  EXPECT_EQ(back.RolesText(), "submit,work");
  EXPECT_EQ(back.QueuesText(), "billing*,invoices");
  EXPECT_EQ(back.sha256, entry.sha256);
  EXPECT_TRUE(back.InScope("billing.eu"));
  EXPECT_FALSE(back.InScope("emails"));
}

TEST(TokenFileTest, EmptyRolesAndQueuesAreRefusedEvenAsNullViews) {
  // A null string_view is what a field without '=' splits into.
  EXPECT_THAT(ParseRoles(absl::string_view()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("roles needs a value")));
  EXPECT_THAT(ParseQueueGlobs(absl::string_view()).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("queues needs a value")));
  EXPECT_THAT(ParseRoles("").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseQueueGlobs("").status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(TokenFileTest, RejectsBadLinesNamingThem) {
  const std::string hash(64, 'a');
  EXPECT_THAT(ParseTokenFile("x roles=owner sha256=" + hash).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 1: unknown role 'owner'")));
  EXPECT_THAT(ParseTokenFile("x roles=read").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("sha256= is missing")));
  EXPECT_THAT(ParseTokenFile("x sha256=" + hash).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("roles= is missing")));
  EXPECT_THAT(
      ParseTokenFile("x roles=read sha256=abc").status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("64 hex digits")));
  EXPECT_THAT(ParseTokenFile("x roles=read queues=a/b sha256=" + hash).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'a/b'")));
  // A field without a value: a bare "queues" read as every queue, a bare
  // "roles" as no role (found by fuzz/token_file_fuzz.cc).
  EXPECT_THAT(ParseTokenFile("x roles=read queues sha256=" + hash).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 1: queues needs a value")));
  EXPECT_THAT(ParseTokenFile("x roles sha256=" + hash).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 1: roles needs a value")));
  EXPECT_THAT(ParseTokenFile("x roles= sha256=" + hash).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 1: roles needs a value")));
  EXPECT_THAT(ParseTokenFile("x roles=read secret=1 sha256=" + hash).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("unknown field 'secret'")));
  EXPECT_THAT(ParseTokenFile("x roles=read sha256=" + hash +
                             "\ny roles=read sha256=" + hash)
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 2: token y has the same secret")));
  EXPECT_THAT(ParseTokenFile("x roles=read sha256=" + hash +
                             "\nx roles=read sha256=" + std::string(64, 'b'))
                  .status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 2: token name x is used twice")));
}

TEST(SecretTest, SecretsAreLongRandomAndFoundByHash) {
  std::set<std::string> seen;
  std::vector<TokenEntry> entries;
  for (int i = 0; i < 8; ++i) {
    absl::StatusOr<std::string> secret = GenerateSecret();
    ASSERT_THAT(secret.status(), IsOk());
    EXPECT_EQ(secret->size(), 6u + 43u) << *secret;
    EXPECT_EQ(secret->rfind("ferry_", 0), 0u);
    EXPECT_TRUE(seen.insert(*secret).second);
    entries.push_back(TokenEntry{"t" + std::to_string(i),
                                 static_cast<uint8_t>(Role::kRead),
                                 {},
                                 HashSecret(*secret)});
  }
  const TokenSet set(entries);
  int i = 0;
  for (const std::string& secret : seen) {
    const TokenEntry* found = set.Find(secret);
    ASSERT_NE(found, nullptr);
    EXPECT_EQ(found->sha256, HashSecret(secret));
    ++i;
  }
  EXPECT_EQ(set.Find("ferry_not-a-token"), nullptr);
  EXPECT_EQ(set.Find(""), nullptr);
}

}  // namespace
}  // namespace ferry
