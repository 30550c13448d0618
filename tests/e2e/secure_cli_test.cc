// The whole secure path with the real binaries: tokens made with
// `ferry token create` into the file a real ferryd (mutual TLS, --auth_tokens)
// reads; ferry submits and waits over TLS with its token; ferry-worker runs
// the job over TLS with its own. What each gets when the token is missing,
// unknown (revoked, then SIGHUP), lacks the role, or TLS is left out.

#include <signal.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cli_test_util.h"
#include "tests/e2e/subprocess.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"
#include "tests/tls_certs.h"

namespace ferry::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

constexpr absl::Duration kStartTimeout = absl::Seconds(30);
constexpr absl::Duration kCommandTimeout = absl::Seconds(30);

class SecureCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    FERRY_ASSERT_OK_AND_ASSIGN(pki_, MakeTestPki(dir_.path()));
    tokens_ = Path("tokens");
    // Every token with `ferry token create`, before ferryd reads the file.
    submitter_ = CreateToken("submitter", "submit");
    reader_ = CreateToken("reader", "read");
    worker_ = CreateToken("worker", "work");
    FERRY_ASSERT_OK_AND_ASSIGN(
        ferryd_,
        StartFerryd(
            FERRYD_PATH,
            {"--db=" + Path("ferry.db"), "--tls_cert=" + pki_.server_cert,
             "--tls_key=" + pki_.server_key, "--tls_client_ca=" + pki_.ca,
             "--auth_tokens=" + tokens_, "--log_level=trace"},
            &address_));
  }

  void TearDown() override {
    if (HasFailure() && ferryd_ != nullptr) {
      std::cerr << "ferryd's log:\n" << ferryd_->Output() << "\n";
    }
  }

  std::string Path(absl::string_view name) const {
    return absl::StrCat(dir_.path(), "/", name);
  }

  // Runs the real `ferry ARGS...`; no run may print a secret.
  CliRun FerryAsIs(std::vector<std::string> args) {
    std::vector<std::string> argv = {FERRY_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    CliRun run;
    absl::StatusOr<int> code =
        RunCommand(argv, {}, kCommandTimeout, &run.out, &run.all);
    EXPECT_THAT(code, IsOk()) << absl::StrJoin(argv, " ");
    run.code = code.value_or(-1);
    for (const std::string* secret : {&submitter_, &reader_, &worker_}) {
      if (secret->empty()) continue;
      std::string token;
      std::ifstream(*secret) >> token;
      EXPECT_THAT(run.all, Not(HasSubstr(token)));
    }
    return run;
  }

  // `ferry` with the broker, its CA and the client certificate.
  CliRun Ferry(std::vector<std::string> args) {
    std::vector<std::string> tls = TlsFlags();
    args.insert(args.begin(), tls.begin(), tls.end());
    return FerryAsIs(std::move(args));
  }

  std::vector<std::string> TlsFlags() const {
    return {"--broker=" + address_, "--tls_ca=" + pki_.ca,
            "--tls_cert=" + pki_.client_cert, "--tls_key=" + pki_.client_key};
  }

  // `ferry token create NAME --roles ROLES` into tokens_; the file its
  // secret was saved in.
  std::string CreateToken(const std::string& name, const std::string& roles) {
    CliRun run = FerryAsIs(
        {"token", "create", name, "--roles", roles, "--file", tokens_});
    EXPECT_EQ(run.code, 0) << run.all;
    EXPECT_THAT(run.out, MatchesRegex("ferry_[A-Za-z0-9_-]{43}\n"));
    const std::string file = Path(name + ".token");
    std::ofstream(file) << run.out;
    return file;
  }

  ScopedTempDir dir_;
  TestPki pki_;
  std::string tokens_;
  std::string submitter_, reader_, worker_;  // token files
  std::unique_ptr<Subprocess> ferryd_;
  std::string address_;
};

TEST_F(SecureCliTest, JobGoesThroughOverMutualTlsWithTokens) {
  CliRun submitted = Ferry(
      {"--token_file", submitter_, "submit", "secure", "--payload", "hello"});
  const std::string id = SubmittedId(submitted);
  ASSERT_FALSE(id.empty());

  // ferry-worker with its own token, from the environment this time.
  std::vector<std::string> argv = {FERRY_WORKER_PATH};
  std::vector<std::string> tls = TlsFlags();
  argv.insert(argv.end(), tls.begin(), tls.end());
  argv.insert(argv.end(), {"--queues=secure", "--", "tr", "a-z", "A-Z"});
  Subprocess::Options options;
  options.env = {"FERRY_TOKEN_FILE=" + worker_};
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subprocess> worker,
                             Subprocess::Start(argv, options));
  ASSERT_THAT(worker->WaitForLine("connected broker=", kStartTimeout), IsOk())
      << worker->Output();

  // A read token may wait for it.
  CliRun waited =
      Ferry({"--token_file", reader_, "wait", id, "--timeout", "60s"});
  EXPECT_EQ(waited.code, 0) << waited.all;
  EXPECT_EQ(waited.out, "HELLO");

  worker->Signal(SIGTERM);
  FERRY_ASSERT_OK_AND_ASSIGN(int code, worker->Wait(kStartTimeout));
  EXPECT_EQ(code, 0) << worker->Output();
}

TEST_F(SecureCliTest, RefusedTokensExitOneWithTheReasonAndAHint) {
  CliRun none = Ferry({"queues"});
  EXPECT_EQ(none.code, 1) << none.all;
  EXPECT_THAT(none.all, HasSubstr("this broker needs a token"));
  EXPECT_THAT(none.all, HasSubstr("ferry: the broker needs a token: pass "
                                  "--token_file FILE or set FERRY_TOKEN"));

  CliRun reader =
      Ferry({"--token_file", reader_, "submit", "secure", "--payload", "nope"});
  EXPECT_EQ(reader.code, 1) << reader.all;
  EXPECT_THAT(reader.all, HasSubstr("token reader may not call"));
  EXPECT_THAT(reader.all, Not(HasSubstr("does not know this token")));

  // Revoked, and ferryd told to read its file again.
  EXPECT_THAT(FerryAsIs({"token", "revoke", "reader", "--file", tokens_}),
              ExitsWith(0, "token reader removed"));
  ferryd_->Signal(SIGHUP);
  ASSERT_THAT(ferryd_->WaitForLine("tokens reloaded", kStartTimeout), IsOk());
  CliRun revoked = Ferry({"--token_file", reader_, "queues"});
  EXPECT_EQ(revoked.code, 1) << revoked.all;
  EXPECT_THAT(revoked.all,
              HasSubstr("ferry: the broker does not know this token"));
}

TEST_F(SecureCliTest, WithoutTlsOrTheClientCertificateItIsUnreachable) {
  CliRun plaintext =
      FerryAsIs({"--broker=" + address_, "--token_file", reader_, "queues"});
  EXPECT_EQ(plaintext.code, 4) << plaintext.all;
  EXPECT_THAT(plaintext.all, HasSubstr("if ferryd uses TLS, pass --tls_ca"));

  CliRun no_cert = FerryAsIs({"--broker=" + address_, "--tls_ca=" + pki_.ca,
                              "--token_file", reader_, "queues"});
  EXPECT_EQ(no_cert.code, 4) << no_cert.all;
  EXPECT_THAT(no_cert.all, HasSubstr("client certificate"));
}

TEST_F(SecureCliTest, NoSecretReachesAnyOutputEvenAtTraceLevel) {
  const std::string canary = "ferry_CANARY" + std::string(37, 'x');
  // ferry with an unknown token from the environment: refused.
  std::string out, all;
  Subprocess::Options env;
  env.env = {"FERRY_TOKEN=" + canary};
  std::vector<std::string> argv = {FERRY_PATH};
  std::vector<std::string> tls = TlsFlags();
  argv.insert(argv.end(), tls.begin(), tls.end());
  argv.insert(argv.end(), {"--json", "queues"});
  FERRY_ASSERT_OK_AND_ASSIGN(
      int code, RunCommand(argv, env, kCommandTimeout, &out, &all));
  EXPECT_EQ(code, 1) << all;
  EXPECT_THAT(all, Not(HasSubstr("CANARY")));

  // ferry-worker at trace level with the same token: refused, says so.
  std::vector<std::string> worker_argv = {FERRY_WORKER_PATH};
  worker_argv.insert(worker_argv.end(), tls.begin(), tls.end());
  worker_argv.insert(worker_argv.end(),
                     {"--queues=secure", "--log_level=trace", "--", "cat"});
  FERRY_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Subprocess> worker,
                             Subprocess::Start(worker_argv, env));
  EXPECT_THAT(worker->WaitForLine("UNAUTHENTICATED", kStartTimeout), IsOk())
      << worker->Output();
  worker->Signal(SIGTERM);
  EXPECT_THAT(worker->Wait(kStartTimeout), IsOk());
  EXPECT_THAT(worker->Output(), Not(HasSubstr("CANARY")));

  // Real tokens used, accepted and refused: in no output either.
  Ferry({"--token_file", submitter_, "submit", "secure", "--payload", "x"});
  Ferry({"--token_file", reader_, "pause", "secure"});
  EXPECT_THAT(ferryd_->WaitForLine("call refused", kStartTimeout), IsOk());
  const std::string log = ferryd_->Output();
  EXPECT_THAT(log, Not(HasSubstr("CANARY")));
  for (const std::string* file : {&submitter_, &reader_, &worker_}) {
    std::string secret;
    std::ifstream(*file) >> secret;
    ASSERT_FALSE(secret.empty());
    EXPECT_THAT(log, Not(HasSubstr(secret)));
    EXPECT_THAT(worker->Output(), Not(HasSubstr(secret)));
  }
}

// The documented set-up (docs/operations.md, Security): deploy/make-certs.sh
// makes the CA, ferryd's certificate and a client's; a ferryd on them with
// mutual TLS answers a ferry that trusts the CA.
TEST_F(SecureCliTest, MakeCertsScriptMakesWorkingCertificates) {
  const std::string pki = Path("made");
  const std::string script = FERRY_SOURCE_DIR "/deploy/make-certs.sh";
  std::string out, all;
  FERRY_ASSERT_OK_AND_ASSIGN(
      int code, RunCommand({script, pki, "server", "localhost", "127.0.0.1"},
                           {}, kCommandTimeout, &out, &all));
  ASSERT_EQ(code, 0) << all;
  FERRY_ASSERT_OK_AND_ASSIGN(
      code, RunCommand({script, pki, "client", "worker-7"}, {}, kCommandTimeout,
                       &out, &all));
  ASSERT_EQ(code, 0) << all;
  std::string address;
  FERRY_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<Subprocess> ferryd,
      StartFerryd(
          FERRYD_PATH,
          {"--db=" + Path("made.db"), "--tls_cert=" + pki + "/server.crt",
           "--tls_key=" + pki + "/server.key",
           "--tls_client_ca=" + pki + "/ca.crt", "--auth_tokens=" + tokens_},
          &address));
  CliRun run = FerryAsIs({"--broker=" + address, "--tls_ca=" + pki + "/ca.crt",
                          "--tls_cert=" + pki + "/worker-7.crt",
                          "--tls_key=" + pki + "/worker-7.key", "--token_file",
                          reader_, "queues"});
  EXPECT_EQ(run.code, 0) << run.all;
  // And by the name in the certificate rather than the address.
  run = FerryAsIs({"--broker=" + address, "--tls_ca=" + pki + "/ca.crt",
                   "--tls_server_name=localhost",
                   "--tls_cert=" + pki + "/worker-7.crt",
                   "--tls_key=" + pki + "/worker-7.key", "--token_file",
                   reader_, "queues"});
  EXPECT_EQ(run.code, 0) << run.all;
}

}  // namespace
}  // namespace ferry::testing
