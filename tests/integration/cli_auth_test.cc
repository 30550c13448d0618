// The ferry CLI with TLS and tokens: the global flags and their variables,
// what it says when the broker refuses a token or a TLS handshake fails,
// and its exit codes. RunCli in process, against a FakeBroker that checks
// tokens and TLS as ferryd does; the environment is a map handed to RunCli.

#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cli_test_util.h"
#include "tests/fake_broker.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"
#include "tests/tls_certs.h"

namespace ferry::testing {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr char kToken[] = "ferry_cliTokenA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r";
constexpr char kOtherToken[] =
    "ferry_unknownZ9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i";
constexpr char kNeedsToken[] =
    "ferry: the broker needs a token: pass --token_file FILE or set "
    "FERRY_TOKEN";
constexpr char kRunningThere[] = "is ferryd running there?";

class CliAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    FERRY_ASSERT_OK_AND_ASSIGN(pki_, MakeTestPki(dir_.path()));
    token_file_ = Write("client.token", absl::StrCat(kToken, "\n"));
  }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(dir_.path(), "/", name);
    std::ofstream(path) << text;
    return path;
  }

  void StartBroker(FakeBroker::Options options) {
    FERRY_ASSERT_OK_AND_ASSIGN(broker_, FakeBroker::Start(std::move(options)));
  }

  // Options of a plaintext broker that knows kToken as "cli".
  static FakeBroker::Options TokenBroker() {
    FakeBroker::Options options;
    options.tokens = {{kToken, "cli"}};
    return options;
  }

  // A broker over TLS (the test PKI's server certificate) that knows kToken
  // as "cli".
  void StartTlsBroker() {
    FakeBroker::Options options;
    options.server_cert = pki_.server_cert;
    options.server_key = pki_.server_key;
    options.tokens = {{kToken, "cli"}};
    StartBroker(options);
  }

  // Runs `ferry ARGS...` against the broker with `env_` as the
  // environment. No run may print the token.
  CliRun Ferry(const std::vector<std::string>& args) {
    std::ostringstream out;
    std::ostringstream err;
    CliRun run;
    run.code = RunCli(args, broker_ ? broker_->address() : "127.0.0.1:1", out,
                      err, [this](const char* name) -> const char* {
                        auto it = env_.find(name);
                        return it == env_.end() ? nullptr : it->second.c_str();
                      });
    run.out = out.str();
    run.all = out.str() + err.str();
    EXPECT_THAT(run.all, Not(HasSubstr(kToken)));
    EXPECT_THAT(run.all, Not(HasSubstr(kOtherToken)));
    return run;
  }

  ScopedTempDir dir_;
  TestPki pki_;
  std::string token_file_;
  std::unique_ptr<FakeBroker> broker_;
  std::map<std::string, std::string> env_;
};

// ------------------------------------------------------------- the token

TEST_F(CliAuthTest, NoTokenToABrokerThatWantsOneSaysHowToGiveIt) {
  StartBroker(TokenBroker());
  CliRun run = Ferry({"queues"});
  EXPECT_EQ(run.code, 1) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry: no token\n"));  // the broker's
  EXPECT_THAT(run.all, HasSubstr(kNeedsToken));
  EXPECT_THAT(run.out, IsEmpty());
}

TEST_F(CliAuthTest, UnknownTokenSaysTheBrokerDoesNotKnowIt) {
  StartBroker(TokenBroker());
  CliRun run = Ferry({"--token_file", Write("other", kOtherToken), "queues"});
  EXPECT_EQ(run.code, 1) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry: unknown token\n"));
  EXPECT_THAT(
      run.all,
      HasSubstr("ferry: the broker does not know this token (revoked?"));
  EXPECT_THAT(run.all, Not(HasSubstr(kNeedsToken)));
}

TEST_F(CliAuthTest, TokenLackingARolePrintsTheBrokersReason) {
  FakeBroker::Options options = TokenBroker();
  options.refused = {"cli"};
  StartBroker(options);
  CliRun run =
      Ferry({"--token_file", token_file_, "submit", "billing", "--payload=x"});
  EXPECT_EQ(run.code, 1) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry: token \"cli\" may not submit to queue "
                                 "\"billing\" (it lacks role submit)"));
  EXPECT_THAT(run.all, Not(HasSubstr("the broker needs a token")));
  EXPECT_THAT(run.all, Not(HasSubstr("does not know this token")));
}

TEST_F(CliAuthTest, TokenFileFlagWinsOverTheVariablesAndGoesWithTheCall) {
  StartBroker(TokenBroker());
  env_ = {{"FERRY_TOKEN", kOtherToken}};
  EXPECT_THAT(Ferry({"queues", "--token_file", token_file_}),
              ExitsWith(0, "fake"));
  env_ = {{"FERRY_TOKEN", kToken},
          {"FERRY_TOKEN_FILE", Write("other", kOtherToken)}};
  EXPECT_THAT(Ferry({"queues"}), ExitsWith(0, "fake"));
  env_ = {{"FERRY_TOKEN_FILE", token_file_}};
  EXPECT_THAT(Ferry({"queues"}), ExitsWith(0, "fake"));
  const std::string bearer = absl::StrCat("Bearer ", kToken);
  EXPECT_THAT(broker_->Authorizations(), ElementsAre(bearer, bearer, bearer));
}

TEST_F(CliAuthTest, BadTokenFileIsAUsageErrorBeforeAnyCall) {
  StartBroker(TokenBroker());
  const std::string empty = Write("empty", "\n");
  EXPECT_THAT(Ferry({"--token_file", empty, "queues"}),
              ExitsWith(2, absl::StrCat("ferry: --token_file: token file ",
                                        empty, " is empty")));
  env_ = {{"FERRY_TOKEN_FILE", dir_.path() + "/missing"}};
  EXPECT_THAT(Ferry({"queues"}),
              ExitsWith(2, "ferry: FERRY_TOKEN_FILE: cannot read "));
  EXPECT_THAT(broker_->Authorizations(), IsEmpty());
}

// -------------------------------------------------------------------- TLS

TEST_F(CliAuthTest, TlsFromTheFlagOrTheVariable) {
  StartTlsBroker();
  EXPECT_THAT(
      Ferry({"--tls_ca", pki_.ca, "--token_file", token_file_, "queues"}),
      ExitsWith(0, "fake"));
  env_ = {{"FERRY_TLS_CA", pki_.ca}, {"FERRY_TOKEN", kToken}};
  EXPECT_THAT(Ferry({"queues"}), ExitsWith(0, "fake"));
  // Options go after the command too, spelt with '-' as well.
  env_.clear();
  EXPECT_THAT(Ferry({"queues", "--tls-ca", pki_.ca, "--token-file", token_file_,
                     "--call_timeout=5s"}),
              ExitsWith(0, "fake"));
  EXPECT_EQ(broker_->Authorizations().size(), 3u);
}

TEST_F(CliAuthTest, MutualTlsWithAClientCertificate) {
  FakeBroker::Options options;
  options.server_cert = pki_.server_cert;
  options.server_key = pki_.server_key;
  options.client_ca = pki_.ca;
  StartBroker(options);
  EXPECT_THAT(Ferry({"--tls_ca", pki_.ca, "--tls_cert", pki_.client_cert,
                     "--tls_key", pki_.client_key, "queues"}),
              ExitsWith(0, "fake"));
  CliRun without = Ferry({"--tls_ca", pki_.ca, "queues"});
  EXPECT_EQ(without.code, 4) << without.all;
  EXPECT_THAT(without.all,
              HasSubstr("it may want a client certificate it trusts "
                        "(--tls_cert and --tls_key)"));
}

TEST_F(CliAuthTest, WrongCaIsUnreachableWithAHintAboutTheCa) {
  StartTlsBroker();
  CliRun run = Ferry({"--tls_ca", pki_.other_ca, "queues"});
  EXPECT_EQ(run.code, 4) << run.all;
  EXPECT_THAT(run.all, HasSubstr("certificate verify failed"));
  EXPECT_THAT(run.all, HasSubstr("ferry: the TLS handshake failed: check that "
                                 "--tls_ca is the CA that signed ferryd's"));
  EXPECT_THAT(run.all, Not(HasSubstr(kRunningThere)));
}

TEST_F(CliAuthTest, ExpiredBrokerCertificateIsUnreachableWithTheSameHint) {
  FakeBroker::Options options;
  options.server_cert = pki_.expired_server_cert;
  options.server_key = pki_.expired_server_key;
  StartBroker(options);
  CliRun run = Ferry({"--tls_ca", pki_.ca, "queues"});
  EXPECT_EQ(run.code, 4) << run.all;
  EXPECT_THAT(run.all, HasSubstr("the certificate is valid now"));
}

TEST_F(CliAuthTest, NameNotInTheCertificateHintsAtServerName) {
  StartTlsBroker();
  CliRun run =
      Ferry({"--tls_ca", pki_.ca, "--tls_server_name", "wrong.test", "queues"});
  EXPECT_EQ(run.code, 4) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry: ferryd's certificate does not carry "
                                 "the host in --broker: set "
                                 "--tls_server_name"));
  EXPECT_THAT(run.all, Not(HasSubstr(kRunningThere)));
}

TEST_F(CliAuthTest, PlaintextToATlsBrokerHintsAtTlsCa) {
  StartTlsBroker();
  CliRun run = Ferry({"queues"});
  EXPECT_EQ(run.code, 4) << run.all;
  EXPECT_THAT(run.all,
              HasSubstr("ferry: if ferryd uses TLS, pass --tls_ca FILE (or "
                        "set FERRY_TLS_CA)"));
}

TEST_F(CliAuthTest, TlsToAPlaintextBrokerSaysItDoesNotAnswerInTls) {
  StartBroker({});
  CliRun run = Ferry({"--tls_ca", pki_.ca, "queues"});
  EXPECT_EQ(run.code, 4) << run.all;
  EXPECT_THAT(run.all, HasSubstr("ferry: the broker does not answer in TLS"));
}

TEST_F(CliAuthTest, BadTlsSettingsAreUsageErrorsBeforeAnyCall) {
  StartTlsBroker();
  struct Case {
    std::vector<std::string> args;
    std::map<std::string, std::string> env;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--tls_ca", pki_.ca, "--tls_cert", pki_.client_cert},
       {},
       "ferry: --tls_cert needs --tls_key (or FERRY_TLS_KEY)"},
      {{"--tls_cert", pki_.client_cert, "--tls_key", pki_.client_key},
       {},
       "ferry: --tls_cert needs --tls_ca (or FERRY_TLS_CA)"},
      {{"--tls_ca", dir_.path() + "/missing.crt"},
       {},
       absl::StrCat("ferry: --tls_ca: cannot read ", dir_.path(),
                    "/missing.crt: No such file or directory")},
      {{},
       {{"FERRY_TLS_CA", pki_.server_key}},
       absl::StrCat("ferry: ", pki_.server_key, " is not a PEM certificate")},
      {{"--tls_ca", pki_.ca, "--tls_cert", pki_.expired_client_cert,
        "--tls_key", pki_.expired_client_key},
       {},
       absl::StrCat("ferry: client certificate ", pki_.expired_client_cert,
                    " has expired (on ")},
      {{"--tls_ca", pki_.ca, "--tls_cert", pki_.client_cert, "--tls_key",
        pki_.server_key},
       {},
       absl::StrCat("ferry: key ", pki_.server_key,
                    " does not match certificate ", pki_.client_cert)},
  };
  for (const Case& c : cases) {
    env_ = c.env;
    env_["FERRY_TOKEN"] = kToken;
    std::vector<std::string> args = c.args;
    args.push_back("queues");
    EXPECT_THAT(Ferry(args), ExitsWith(2, c.message));
  }
  EXPECT_THAT(broker_->Authorizations(), IsEmpty());
}

TEST_F(CliAuthTest, LocalCommandsReadNoTlsOrToken) {
  // A broken setting for the broker does not stop `ferry token`.
  env_ = {{"FERRY_TLS_CA", dir_.path() + "/missing.crt"},
          {"FERRY_TOKEN_FILE", dir_.path() + "/missing.token"}};
  const std::string tokens = Write("tokens", "");
  CliRun run = Ferry({"token", "list", "--file", tokens});
  EXPECT_EQ(run.code, 0) << run.all;
}

TEST_F(CliAuthTest, HelpListsTheTlsAndTokenOptionsWithTheirVariables) {
  CliRun help = Ferry({"help"});
  EXPECT_EQ(help.code, 0) << help.all;
  for (const char* text :
       {"--tls_ca FILE", "--tls_cert FILE", "--tls_key FILE",
        "--tls_server_name NAME", "--token_file FILE", "$FERRY_TLS_CA",
        "$FERRY_TLS_CERT", "$FERRY_TLS_KEY", "$FERRY_TLS_SERVER_NAME",
        "FERRY_TOKEN (the secret itself)", "FERRY_TOKEN_FILE",
        "token create NAME", "token list", "token revoke NAME"}) {
    EXPECT_THAT(help.out, HasSubstr(text)) << text;
  }
}

}  // namespace
}  // namespace ferry::testing
