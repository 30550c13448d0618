// `ferry token create|list|revoke`: changes to ferryd's token file, made
// without a broker. RunCli in process on files in a temporary directory.

#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "auth/tokens.h"
#include "base/read_file.h"
#include "client/cli.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cli_test_util.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"

namespace ferry::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::SizeIs;

class CliTokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    file_ = dir_.path() + "/tokens";
  }

  static CliRun Ferry(const std::vector<std::string>& args) {
    std::ostringstream out;
    std::ostringstream err;
    CliRun run;
    // No broker: the address would refuse every connection.
    run.code = RunCli(args, "127.0.0.1:1", out, err);
    run.out = out.str();
    run.all = out.str() + err.str();
    return run;
  }

  // `ferry token create NAME ARGS... --file file_`, which must succeed;
  // the secret it printed.
  std::string MustCreate(const std::string& name,
                         std::vector<std::string> args) {
    args.insert(args.begin(), {"token", "create", name});
    args.insert(args.end(), {"--file", file_});
    CliRun run = Ferry(args);
    EXPECT_EQ(run.code, 0) << run.all;
    EXPECT_THAT(run.out, MatchesRegex("ferry_[A-Za-z0-9_-]{43}\n"));
    return std::string(absl::StripTrailingAsciiWhitespace(run.out));
  }

  std::string Contents() {
    absl::StatusOr<std::string> text = ReadFileToString(file_);
    EXPECT_THAT(text, IsOk());
    return text.value_or("");
  }

  std::vector<TokenEntry> Entries() {
    absl::StatusOr<std::vector<TokenEntry>> entries =
        ParseTokenFile(Contents());
    EXPECT_THAT(entries, IsOk());
    return entries.value_or(std::vector<TokenEntry>());
  }

  void WriteFile(const std::string& text) { std::ofstream(file_) << text; }

  ScopedTempDir dir_;
  std::string file_;
};

TEST_F(CliTokenTest, CreateAddsALineWhoseHashIsThePrintedSecrets) {
  const std::string secret = MustCreate(
      "billing", {"--roles", "submit,work", "--queues=billing*,inv"});
  std::vector<TokenEntry> entries = Entries();
  ASSERT_THAT(entries, SizeIs(1));
  EXPECT_EQ(entries[0].name, "billing");
  EXPECT_EQ(entries[0].RolesText(), "submit,work");
  EXPECT_THAT(entries[0].queues, ElementsAre("billing*", "inv"));
  EXPECT_EQ(entries[0].sha256, HashSecret(secret));
  // ferryd finds it by the secret.
  TokenSet set(entries);
  ASSERT_NE(set.Find(secret), nullptr);
  EXPECT_EQ(set.Find(secret)->name, "billing");
  // The file holds the hash, never the secret; made for its owner alone.
  EXPECT_THAT(Contents(), Not(HasSubstr(secret)));
  struct stat info;
  ASSERT_EQ(stat(file_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600);
}

TEST_F(CliTokenTest, CreateAppendsAndKeepsWhatWasThere) {
  WriteFile("# ferryd's tokens\nops roles=admin sha256=" +
            std::string(64, 'a'));  // no newline at the end
  chmod(file_.c_str(), 0600);
  const std::string secret = MustCreate("reader", {"--roles=read"});
  EXPECT_THAT(Contents(),
              HasSubstr(absl::StrCat("# ferryd's tokens\nops roles=admin "
                                     "sha256=",
                                     std::string(64, 'a'), "\nreader ")));
  std::vector<TokenEntry> entries = Entries();
  ASSERT_THAT(entries, SizeIs(2));
  EXPECT_EQ(entries[1].name, "reader");
  EXPECT_TRUE(entries[1].AllQueues());
  EXPECT_EQ(entries[1].sha256, HashSecret(secret));
  // Each create makes a new secret.
  EXPECT_NE(MustCreate("reader2", {"--roles=read"}), secret);
}

TEST_F(CliTokenTest, DuplicateNameIsRefusedAndTheFileIsUnchanged) {
  MustCreate("billing", {"--roles=submit"});
  const std::string before = Contents();
  CliRun run =
      Ferry({"token", "create", "billing", "--roles=admin", "--file", file_});
  EXPECT_EQ(run.code, 1) << run.all;
  EXPECT_THAT(run.all, HasSubstr("token billing is already in " + file_));
  EXPECT_THAT(run.out, IsEmpty());
  EXPECT_EQ(Contents(), before);
}

TEST_F(CliTokenTest, BadRoleQueueOrNameIsAUsageErrorAndWritesNothing) {
  MustCreate("billing", {"--roles=submit"});
  const std::string before = Contents();
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"x", "--roles=submit,root"}, "unknown role 'root'"},
      {{"x", "--roles="}, "roles needs a value"},
      {{"x", "--roles=read", "--queues="}, "queues needs a value"},
      {{"x", "--roles=read", "--queues=bad/queue"},
       "queue scope 'bad/queue' is not a queue name"},
      {{"bad name!", "--roles=read"}, "token name"},
      {{"x"}, "--roles is required"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"token", "create"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    args.insert(args.end(), {"--file", file_});
    CliRun run = Ferry(args);
    EXPECT_EQ(run.code, 2) << run.all;
    EXPECT_THAT(run.all, HasSubstr(c.message)) << run.all;
    EXPECT_THAT(run.all, HasSubstr("Usage: ferry token create NAME"));
    EXPECT_THAT(run.out, IsEmpty());
  }
  EXPECT_THAT(Ferry({"token", "create", "x", "--roles=read"}),
              ExitsWith(2, "--file is required"));
  EXPECT_EQ(Contents(), before);
}

TEST_F(CliTokenTest, FileThatDoesNotParseIsRefusedUnchanged) {
  WriteFile("ops roles=admin sha256=" + std::string(64, 'a') +
            "\nbroken roles=wizard sha256=" + std::string(64, 'b') + "\n");
  const std::string before = Contents();
  CliRun run = Ferry({"token", "create", "x", "--roles=read", "--file", file_});
  EXPECT_EQ(run.code, 1) << run.all;
  EXPECT_THAT(run.all, HasSubstr(file_ + ": line 2: unknown role 'wizard'"));
  EXPECT_THAT(run.out, IsEmpty());
  EXPECT_EQ(Contents(), before);
}

TEST_F(CliTokenTest, FileOthersCanReadOrWriteGetsAWarning) {
  WriteFile("");
  chmod(file_.c_str(), 0644);
  CliRun run = Ferry({"token", "create", "x", "--roles=read", "--file", file_});
  EXPECT_EQ(run.code, 0) << run.all;
  EXPECT_THAT(run.all,
              HasSubstr("ferry: warning: " + file_ +
                        " is readable by others than its owner (mode 0644)"));
  chmod(file_.c_str(), 0666);
  run = Ferry({"token", "create", "y", "--roles=read", "--file", file_});
  EXPECT_THAT(run.all, HasSubstr("is writable by others than its owner "
                                 "(mode 0666); anyone who can write it"));
  chmod(file_.c_str(), 0600);
  run = Ferry({"token", "create", "z", "--roles=read", "--file", file_});
  EXPECT_THAT(run.all, Not(HasSubstr("warning")));
}

TEST_F(CliTokenTest, FileInAMissingDirectoryIsAUsageError) {
  CliRun run = Ferry({"token", "create", "x", "--roles=read", "--file",
                      dir_.path() + "/no/tokens"});
  EXPECT_EQ(run.code, 2) << run.all;
  EXPECT_THAT(run.all, HasSubstr("cannot open " + dir_.path() +
                                 "/no/tokens: No such file or directory"));
}

TEST_F(CliTokenTest, ListShowsNamesRolesAndQueuesButNoHashes) {
  MustCreate("billing", {"--roles=submit", "--queues=billing*"});
  MustCreate("ops", {"--roles=admin"});
  CliRun run = Ferry({"token", "list", "--file", file_});
  EXPECT_EQ(run.code, 0) << run.all;
  EXPECT_THAT(Row(run.out, "NAME"), ElementsAre("NAME", "ROLES", "QUEUES"));
  EXPECT_THAT(Row(run.out, "billing"),
              ElementsAre("billing", "submit", "billing*"));
  EXPECT_THAT(Row(run.out, "ops"), ElementsAre("ops", "admin", "*"));
  for (const TokenEntry& entry : Entries()) {
    EXPECT_THAT(run.all, Not(HasSubstr(absl::BytesToHexString(entry.sha256))));
  }
  EXPECT_THAT(Ferry({"token", "list", "--file", dir_.path() + "/missing"}),
              ExitsWith(2, "cannot read"));
}

TEST_F(CliTokenTest, RevokeRemovesOnlyThatLineAndKeepsTheMode) {
  WriteFile("# tokens\n");
  chmod(file_.c_str(), 0640);
  const std::string billing = MustCreate("billing", {"--roles=submit"});
  MustCreate("ops", {"--roles=admin"});
  CliRun run = Ferry({"token", "revoke", "ops", "--file", file_});
  EXPECT_EQ(run.code, 0) << run.all;
  EXPECT_THAT(run.out, HasSubstr("token ops removed from " + file_));
  EXPECT_THAT(Contents(), HasSubstr("# tokens\nbilling roles=submit sha256="));
  std::vector<TokenEntry> entries = Entries();
  ASSERT_THAT(entries, SizeIs(1));
  EXPECT_EQ(entries[0].sha256, HashSecret(billing));
  struct stat info;
  ASSERT_EQ(stat(file_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0640);
}

TEST_F(CliTokenTest, RevokingAnUnknownTokenExitsThreeUnchanged) {
  MustCreate("billing", {"--roles=submit"});
  const std::string before = Contents();
  EXPECT_THAT(Ferry({"token", "revoke", "nobody", "--file", file_}),
              ExitsWith(3, "no token nobody in " + file_));
  EXPECT_EQ(Contents(), before);
}

TEST_F(CliTokenTest, TokenWithoutASubcommandIsAUsageError) {
  // The token commands' usage, on stderr, exit 2.
  CliRun bare = Ferry({"token"});
  EXPECT_EQ(bare.code, 2);
  EXPECT_EQ(bare.out, "");
  EXPECT_THAT(bare.all, HasSubstr("Usage: ferry token create NAME"));
  EXPECT_THAT(bare.all, HasSubstr("Usage: ferry token revoke NAME"));
  // Asked for: on stdout, exit 0, as `ferry help token`.
  CliRun help = Ferry({"token", "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, HasSubstr("Usage: ferry token list"));
  EXPECT_EQ(Ferry({"help", "token"}).out, help.out);
  EXPECT_THAT(Ferry({"token", "frob"}),
              ExitsWith(2, "unknown command \"token frob\""));
  help = Ferry({"help", "token", "create"});
  EXPECT_EQ(help.code, 0) << help.all;
  EXPECT_THAT(help.out, HasSubstr("Usage: ferry token create NAME [options]"));
  EXPECT_THAT(help.out, HasSubstr("--roles R[,R]"));
  EXPECT_EQ(Ferry({"token", "create", "--help"}).out, help.out);
}

}  // namespace
}  // namespace ferry::testing
