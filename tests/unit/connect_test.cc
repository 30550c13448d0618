// client/connect.h: where TLS settings and the token come from, what is
// wrong with bad ones (up front, naming the file and never the token), and
// that the channels it opens speak TLS and carry the token on every call
// (against a FakeBroker over loopback).

#include "client/connect.h"

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/fake_broker.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"
#include "tests/tls_certs.h"

namespace ferry::testing {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr char kToken[] = "ferry_Tq3xVbN9kLm2PqR8sT4uVw6Xy0Zabcdefghijklmn";
constexpr absl::Duration kCallTimeout = absl::Seconds(10);

class ConnectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    FERRY_ASSERT_OK_AND_ASSIGN(pki_, MakeTestPki(dir_.path()));
  }

  // A file in the test's directory holding `text`; its path.
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(dir_.path(), "/", name);
    std::ofstream(path) << text;
    return path;
  }

  // ResolveConnectOptions with `env_` as the environment.
  absl::StatusOr<ConnectOptions> Resolve(const ConnectFlags& flags) {
    return ResolveConnectOptions(flags, [this](const char* name) {
      auto it = env_.find(name);
      return it == env_.end() ? nullptr : it->second.c_str();
    });
  }

  // The error resolving `flags` gives; it must be INVALID_ARGUMENT.
  std::string ErrorOf(const ConnectFlags& flags) {
    absl::StatusOr<ConnectOptions> resolved = Resolve(flags);
    EXPECT_THAT(resolved, StatusIs(absl::StatusCode::kInvalidArgument));
    return std::string(resolved.status().message());
  }

  // Calls QueueStats on `address` over a channel opened with `options`.
  static grpc::Status CallQueueStats(const std::string& address,
                                     const ConnectOptions& options) {
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
        OpenChannel(address, options, grpc::ChannelArguments());
    EXPECT_THAT(channel, IsOk());
    if (!channel.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "");
    auto stub = v1::Jobs::NewStub(*channel);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
    v1::QueueStatsResponse response;
    return stub->QueueStats(&context, v1::QueueStatsRequest(), &response);
  }

  ScopedTempDir dir_;
  TestPki pki_;
  std::map<std::string, std::string> env_;
};

// ------------------------------------------------------------ resolution

TEST_F(ConnectTest, NothingGivenIsPlaintextWithoutAToken) {
  FERRY_ASSERT_OK_AND_ASSIGN(ConnectOptions options, Resolve({}));
  EXPECT_FALSE(options.tls());
  EXPECT_FALSE(options.has_token());
}

TEST_F(ConnectTest, EnvironmentFillsWhatFlagsLeaveOut) {
  env_ = {{"FERRY_TLS_CA", pki_.ca},
          {"FERRY_TLS_CERT", pki_.client_cert},
          {"FERRY_TLS_KEY", pki_.client_key},
          {"FERRY_TLS_SERVER_NAME", "broker.example"},
          {"FERRY_TOKEN", kToken}};
  FERRY_ASSERT_OK_AND_ASSIGN(ConnectOptions options, Resolve({}));
  EXPECT_TRUE(options.tls());
  EXPECT_EQ(options.tls_ca, pki_.ca);
  EXPECT_EQ(options.tls_cert, pki_.client_cert);
  EXPECT_EQ(options.tls_key, pki_.client_key);
  EXPECT_EQ(options.tls_server_name, "broker.example");
  EXPECT_EQ(options.token, kToken);
}

TEST_F(ConnectTest, FlagsWinOverTheEnvironment) {
  env_ = {{"FERRY_TLS_CA", "/nonexistent/ca.crt"},
          {"FERRY_TLS_CERT", "/nonexistent/client.crt"},
          {"FERRY_TLS_KEY", "/nonexistent/client.key"},
          {"FERRY_TLS_SERVER_NAME", "env.example"}};
  FERRY_ASSERT_OK_AND_ASSIGN(ConnectOptions options,
                             Resolve({pki_.ca, pki_.client_cert,
                                      pki_.client_key, "flag.example", ""}));
  EXPECT_EQ(options.tls_ca, pki_.ca);
  EXPECT_EQ(options.tls_cert, pki_.client_cert);
  EXPECT_EQ(options.tls_key, pki_.client_key);
  EXPECT_EQ(options.tls_server_name, "flag.example");
}

TEST_F(ConnectTest, EmptyVariablesCountAsUnset) {
  env_ = {{"FERRY_TLS_CA", ""}, {"FERRY_TOKEN", ""}, {"FERRY_TOKEN_FILE", ""}};
  FERRY_ASSERT_OK_AND_ASSIGN(ConnectOptions options, Resolve({}));
  EXPECT_FALSE(options.tls());
  EXPECT_FALSE(options.has_token());
}

TEST_F(ConnectTest, TokenFileFlagWinsOverTokenWhichWinsOverTokenFile) {
  const std::string flag_file = Write("flag_token", "ferry_fromflag\n");
  const std::string env_file = Write("env_token", "ferry_fromenvfile\n");
  env_ = {{"FERRY_TOKEN", "ferry_fromenv"}, {"FERRY_TOKEN_FILE", env_file}};
  ConnectFlags flags;
  flags.token_file = flag_file;
  FERRY_ASSERT_OK_AND_ASSIGN(ConnectOptions options, Resolve(flags));
  EXPECT_EQ(options.token, "ferry_fromflag");

  FERRY_ASSERT_OK_AND_ASSIGN(options, Resolve({}));
  EXPECT_EQ(options.token, "ferry_fromenv");

  env_.erase("FERRY_TOKEN");
  FERRY_ASSERT_OK_AND_ASSIGN(options, Resolve({}));
  EXPECT_EQ(options.token, "ferry_fromenvfile");
}

TEST_F(ConnectTest, TokenFileLosesTheWhitespaceAroundTheSecret) {
  ConnectFlags flags;
  flags.token_file = Write("token", absl::StrCat(kToken, " \r\n\n"));
  FERRY_ASSERT_OK_AND_ASSIGN(ConnectOptions options, Resolve(flags));
  EXPECT_EQ(options.token, kToken);
  env_ = {{"FERRY_TOKEN", absl::StrCat(kToken, "\n")}};
  FERRY_ASSERT_OK_AND_ASSIGN(options, Resolve({}));
  EXPECT_EQ(options.token, kToken);
}

TEST_F(ConnectTest, EmptyOrUnreadableTokenFileIsAnError) {
  ConnectFlags flags;
  flags.token_file = Write("empty", "");
  EXPECT_EQ(ErrorOf(flags), absl::StrCat("--token_file: token file ",
                                         flags.token_file, " is empty"));
  flags.token_file = Write("blank", " \n\n");
  EXPECT_THAT(ErrorOf(flags), HasSubstr("is empty"));
  flags.token_file = dir_.path() + "/missing";
  EXPECT_EQ(ErrorOf(flags),
            absl::StrCat("--token_file: cannot read ", flags.token_file,
                         ": No such file or directory"));
  env_ = {{"FERRY_TOKEN_FILE", dir_.path() + "/missing"}};
  EXPECT_THAT(ErrorOf({}), HasSubstr("FERRY_TOKEN_FILE: cannot read "));
}

TEST_F(ConnectTest, TokenFileOfSeveralLinesOrWordsIsAnErrorNotQuotingIt) {
  ConnectFlags flags;
  // ferryd's token file by mistake.
  flags.token_file = Write(
      "tokens", absl::StrCat(kToken, "\nbilling roles=submit sha256=00\n"));
  std::string error = ErrorOf(flags);
  EXPECT_THAT(error, HasSubstr("holds more than one line"));
  EXPECT_THAT(error, HasSubstr(flags.token_file));
  EXPECT_THAT(error, Not(HasSubstr(kToken)));

  flags.token_file = Write("spaced", absl::StrCat("Bearer ", kToken));
  error = ErrorOf(flags);
  EXPECT_THAT(error, HasSubstr("holds a space"));
  EXPECT_THAT(error, Not(HasSubstr(kToken)));

  env_ = {{"FERRY_TOKEN", absl::StrCat(kToken, "\x01")}};
  error = ErrorOf({});
  EXPECT_THAT(error, HasSubstr("FERRY_TOKEN holds a space or a character"));
  EXPECT_THAT(error, Not(HasSubstr(kToken)));
}

TEST_F(ConnectTest, CertificateWithoutKeyOrKeyWithoutCertificateIsAnError) {
  ConnectFlags flags;
  flags.tls_ca = pki_.ca;
  flags.tls_cert = pki_.client_cert;
  EXPECT_THAT(ErrorOf(flags),
              HasSubstr("--tls_cert needs --tls_key (or FERRY_TLS_KEY)"));
  flags.tls_cert.clear();
  flags.tls_key = pki_.client_key;
  EXPECT_THAT(ErrorOf(flags),
              HasSubstr("--tls_key needs --tls_cert (or FERRY_TLS_CERT)"));
  // Named as given: by its variable.
  env_ = {{"FERRY_TLS_CERT", pki_.client_cert}};
  flags.tls_key.clear();
  EXPECT_THAT(ErrorOf(flags),
              HasSubstr("FERRY_TLS_CERT needs --tls_key (or FERRY_TLS_KEY)"));
}

TEST_F(ConnectTest, ClientCertificateOrServerNameWithoutCaIsAnError) {
  ConnectFlags flags;
  flags.tls_cert = pki_.client_cert;
  flags.tls_key = pki_.client_key;
  EXPECT_THAT(ErrorOf(flags),
              HasSubstr("--tls_cert needs --tls_ca (or FERRY_TLS_CA)"));
  ConnectFlags name_only;
  name_only.tls_server_name = "localhost";
  EXPECT_THAT(ErrorOf(name_only),
              HasSubstr("--tls_server_name needs --tls_ca (or FERRY_TLS_CA)"));
}

TEST_F(ConnectTest, UnreadableOrNonPemCaIsAnErrorNamingTheFile) {
  ConnectFlags flags;
  flags.tls_ca = dir_.path() + "/missing.crt";
  EXPECT_EQ(ErrorOf(flags), absl::StrCat("--tls_ca: cannot read ", flags.tls_ca,
                                         ": No such file or directory"));
  flags.tls_ca = Write("garbage.crt", "not a certificate\n");
  EXPECT_EQ(ErrorOf(flags),
            absl::StrCat(flags.tls_ca, " is not a PEM certificate"));
  // A key where the CA should be.
  flags.tls_ca = pki_.ca_key;
  EXPECT_EQ(ErrorOf(flags),
            absl::StrCat(pki_.ca_key, " is not a PEM certificate"));
  env_ = {{"FERRY_TLS_CA", dir_.path()}};
  EXPECT_THAT(ErrorOf({}), HasSubstr("FERRY_TLS_CA: cannot read "));
}

TEST_F(ConnectTest, ExpiredOrNotYetValidClientCertificateIsAnError) {
  ConnectFlags flags;
  flags.tls_ca = pki_.ca;
  flags.tls_cert = pki_.expired_client_cert;
  flags.tls_key = pki_.expired_client_key;
  EXPECT_THAT(ErrorOf(flags),
              AllOf(HasSubstr(absl::StrCat("client certificate ",
                                           pki_.expired_client_cert,
                                           " has expired (on ")),
                    HasSubstr(" UTC)")));
  // The expiry date is the certificate's: a day ago.
  const std::string yesterday = absl::FormatTime(
      "%Y-%m-%d", absl::Now() - absl::Hours(24), absl::UTCTimeZone());
  const std::string day_before = absl::FormatTime(
      "%Y-%m-%d", absl::Now() - absl::Hours(25), absl::UTCTimeZone());
  const std::string error = ErrorOf(flags);
  EXPECT_TRUE(absl::StrContains(error, "(on " + yesterday) ||
              absl::StrContains(error, "(on " + day_before))
      << error;

  FERRY_ASSERT_OK_AND_ASSIGN(
      CertFiles later,
      MakeCert(dir_.path(), "later", pki_.ca_files(), {}, absl::Hours(1),
               absl::Hours(48), /*is_client=*/true));
  flags.tls_cert = later.cert;
  flags.tls_key = later.key;
  EXPECT_THAT(ErrorOf(flags),
              HasSubstr(absl::StrCat("client certificate ", later.cert,
                                     " is not valid yet (from ")));
}

TEST_F(ConnectTest, KeyOfAnotherCertificateIsAnError) {
  ConnectFlags flags;
  flags.tls_ca = pki_.ca;
  flags.tls_cert = pki_.client_cert;
  flags.tls_key = pki_.server_key;
  EXPECT_EQ(ErrorOf(flags),
            absl::StrCat("key ", pki_.server_key,
                         " does not match certificate ", pki_.client_cert));
  flags.tls_key = pki_.client_cert;
  EXPECT_EQ(ErrorOf(flags),
            absl::StrCat(pki_.client_cert, " is not a PEM private key"));
}

TEST_F(ConnectTest, EncryptedKeyIsAnErrorWithoutAskingForAPassphrase) {
  ConnectFlags flags;
  flags.tls_ca = pki_.ca;
  flags.tls_cert = pki_.client_cert;
  flags.tls_key = Write("encrypted.key",
                        "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
                        "MIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhDZ0Q2\n"
                        "-----END ENCRYPTED PRIVATE KEY-----\n");
  EXPECT_THAT(ErrorOf(flags), HasSubstr(" is encrypted"));
}

TEST_F(ConnectTest, NoErrorQuotesTheToken) {
  env_ = {{"FERRY_TOKEN", kToken}};
  std::vector<ConnectFlags> bad = {
      {pki_.ca, pki_.client_cert, "", "", ""},
      {"", pki_.client_cert, pki_.client_key, "", ""},
      {dir_.path() + "/missing", "", "", "", ""},
      {pki_.ca, pki_.expired_client_cert, pki_.expired_client_key, "", ""},
      {pki_.ca, pki_.client_cert, pki_.server_key, "", ""},
  };
  for (const ConnectFlags& flags : bad) {
    EXPECT_THAT(ErrorOf(flags), Not(HasSubstr(kToken)));
  }
}

TEST_F(ConnectTest, CheckConnectOptionsNamesTheFields) {
  ConnectOptions options;
  options.tls_cert = pki_.client_cert;
  EXPECT_THAT(CheckConnectOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tls_cert needs tls_key")));
  options.tls_key = pki_.client_key;
  EXPECT_THAT(CheckConnectOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tls_cert needs tls_ca")));
  options.tls_ca = pki_.ca;
  EXPECT_THAT(CheckConnectOptions(options), IsOk());
  options.token = "two words";
  EXPECT_THAT(CheckConnectOptions(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("the token holds a space"),
                             Not(HasSubstr("two words")))));
}

// --------------------------------------------------------------- channels

TEST_F(ConnectTest, TokenGoesWithEveryCallOnAPlaintextChannel) {
  FakeBroker::Options broker_options;
  broker_options.tokens = {{kToken, "tester"}};
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(broker_options));
  ConnectOptions options;
  options.token = kToken;
  FERRY_ASSERT_OK_AND_ASSIGN(
      auto channel,
      OpenChannel(broker->address(), options, grpc::ChannelArguments()));
  auto stub = v1::Jobs::NewStub(channel);
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
    v1::QueueStatsResponse response;
    grpc::Status status =
        stub->QueueStats(&context, v1::QueueStatsRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
  // A server stream too.
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kCallTimeout));
  v1::WatchRequest request;
  request.set_job_id("7");
  auto reader = stub->Watch(&context, request);
  v1::WatchResponse update;
  EXPECT_TRUE(reader->Read(&update));
  EXPECT_EQ(update.job().id(), "7");
  EXPECT_FALSE(reader->Read(&update));
  EXPECT_TRUE(reader->Finish().ok());

  const std::string bearer = absl::StrCat("Bearer ", kToken);
  EXPECT_THAT(broker->Authorizations(), ElementsAre(bearer, bearer, bearer));
}

TEST_F(ConnectTest, WithoutATokenNoAuthorizationIsSent) {
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start({}));
  EXPECT_TRUE(CallQueueStats(broker->address(), {}).ok());
  EXPECT_THAT(broker->Authorizations(), ElementsAre(""));
}

TEST_F(ConnectTest, TlsChannelVerifiesTheBrokerByTheCa) {
  FakeBroker::Options broker_options;
  broker_options.server_cert = pki_.server_cert;
  broker_options.server_key = pki_.server_key;
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(broker_options));
  ConnectOptions options;
  options.tls_ca = pki_.ca;
  options.token = kToken;
  grpc::Status status = CallQueueStats(broker->address(), options);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(broker->Authorizations(),
              ElementsAre(absl::StrCat("Bearer ", kToken)));

  // Another CA does not vouch for it; neither does plaintext reach it.
  options.tls_ca = pki_.other_ca;
  status = CallQueueStats(broker->address(), options);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), Not(HasSubstr(kToken)));
  status = CallQueueStats(broker->address(), {});
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(broker->Authorizations().size(), 1u);
}

TEST_F(ConnectTest, ExpiredBrokerCertificateFailsTheHandshake) {
  FakeBroker::Options broker_options;
  broker_options.server_cert = pki_.expired_server_cert;
  broker_options.server_key = pki_.expired_server_key;
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(broker_options));
  ConnectOptions options;
  options.tls_ca = pki_.ca;
  grpc::Status status = CallQueueStats(broker->address(), options);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(broker->Authorizations(), IsEmpty());
}

TEST_F(ConnectTest, ServerNameOverridesTheHostDialed) {
  // A certificate for broker.test alone, dialed as 127.0.0.1.
  FERRY_ASSERT_OK_AND_ASSIGN(
      CertFiles named,
      MakeCert(dir_.path(), "named", pki_.ca_files(), {"DNS:broker.test"}));
  FakeBroker::Options broker_options;
  broker_options.server_cert = named.cert;
  broker_options.server_key = named.key;
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(broker_options));
  ConnectOptions options;
  options.tls_ca = pki_.ca;
  EXPECT_EQ(CallQueueStats(broker->address(), options).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  options.tls_server_name = "broker.test";
  grpc::Status status = CallQueueStats(broker->address(), options);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

TEST_F(ConnectTest, ClientCertificateGetsThroughMutualTls) {
  FakeBroker::Options broker_options;
  broker_options.server_cert = pki_.server_cert;
  broker_options.server_key = pki_.server_key;
  broker_options.client_ca = pki_.ca;
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(broker_options));
  ConnectOptions options;
  options.tls_ca = pki_.ca;
  EXPECT_EQ(CallQueueStats(broker->address(), options).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  options.tls_cert = pki_.client_cert;
  options.tls_key = pki_.client_key;
  grpc::Status status = CallQueueStats(broker->address(), options);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(broker->Authorizations().size(), 1u);
}

TEST_F(ConnectTest, OpenChannelChecksTheFilesFirst) {
  ConnectOptions options;
  options.tls_ca = pki_.ca;
  options.tls_cert = pki_.expired_client_cert;
  options.tls_key = pki_.expired_client_key;
  EXPECT_THAT(
      OpenChannel("127.0.0.1:1", options, grpc::ChannelArguments()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has expired")));
  options.tls_ca = dir_.path() + "/missing";
  EXPECT_THAT(OpenChannel("127.0.0.1:1", options, grpc::ChannelArguments()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tls_ca: cannot read")));
}

}  // namespace
}  // namespace ferry::testing
