// TLS and mutual TLS on a real server, with certificates made for the test:
// a client that trusts the CA gets through; one that trusts another CA,
// speaks plaintext, expects another name, or (with mTLS) brings no, an
// expired or a foreign client certificate does not. Certificates changed
// on disk are used for new connections while open ones keep working.

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/read_file.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "proto/grpc_status.h"
#include "server/server.h"
#include "tests/fake_clock.h"
#include "tests/poll.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"
#include "tests/temp_dir.h"
#include "tests/tls_certs.h"

namespace ferry::testing {
namespace {

using ::testing::HasSubstr;

struct ClientTls {
  std::string ca;  // empty: plaintext
  std::string cert, key;
  std::string server_name;
};

ClientTls Trusting(std::string ca, std::string cert = "",
                   std::string key = "") {
  ClientTls tls;
  tls.ca = std::move(ca);
  tls.cert = std::move(cert);
  tls.key = std::move(key);
  return tls;
}

TlsOptions Serving(std::string cert, std::string key,
                   std::string client_ca = "") {
  TlsOptions tls;
  tls.cert = std::move(cert);
  tls.key = std::move(key);
  tls.client_ca = std::move(client_ca);
  return tls;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<TestPki> pki = MakeTestPki(dir_.path());
    ASSERT_THAT(pki.status(), IsOk());
    pki_ = *pki;
    absl::StatusOr<std::unique_ptr<Store>> store =
        OpenTempSqliteStore(dir_.path());
    ASSERT_THAT(store.status(), IsOk());
    store_ = *std::move(store);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  absl::Status StartServer(TlsOptions tls) {
    ServerOptions options;
    options.listen = "127.0.0.1:0";
    options.tick_interval = absl::ZeroDuration();
    options.tls = std::move(tls);
    absl::StatusOr<std::unique_ptr<FerryServer>> server =
        FerryServer::Start(store_.get(), SystemClock::Get(), options);
    if (!server.ok()) return server.status();
    server_ = *std::move(server);
    return absl::OkStatus();
  }

  std::shared_ptr<grpc::Channel> Channel(const ClientTls& tls) {
    grpc::ChannelArguments args;
    // Each channel its own connection: a handshake per test client.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (tls.ca.empty()) {
      return grpc::CreateCustomChannel(
          server_->address(), grpc::InsecureChannelCredentials(), args);
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *ReadFileToString(tls.ca);
    if (!tls.cert.empty()) {
      ssl.pem_cert_chain = *ReadFileToString(tls.cert);
      ssl.pem_private_key = *ReadFileToString(tls.key);
    }
    if (!tls.server_name.empty()) {
      args.SetSslTargetNameOverride(tls.server_name);
    }
    return grpc::CreateCustomChannel(server_->address(),
                                     grpc::SslCredentials(ssl), args);
  }

  // A QueueStats call (any call would do) over `channel`.
  static absl::Status Call(const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::QueueStatsResponse response;
    return FromGrpcStatus(v1::Jobs::NewStub(channel)->QueueStats(
        &ctx, v1::QueueStatsRequest(), &response));
  }

  ScopedTempDir dir_;
  TestPki pki_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<FerryServer> server_;
};

TEST_F(TlsTest, ClientsThatTrustTheCaGetThroughOthersDoNot) {
  ASSERT_THAT(StartServer(Serving(pki_.server_cert, pki_.server_key)), IsOk());
  EXPECT_THAT(Call(Channel(Trusting(pki_.ca))), IsOk());
  EXPECT_THAT(Call(Channel(Trusting(pki_.other_ca))),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("certificate verify failed")));
  EXPECT_THAT(Call(Channel(ClientTls())),
              StatusIs(absl::StatusCode::kUnavailable));
  ClientTls wrong_name = Trusting(pki_.ca);
  wrong_name.server_name = "ferry.example.com";
  EXPECT_THAT(Call(Channel(wrong_name)),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(TlsTest, MutualTlsNeedsAClientCertificateFromTheCa) {
  TlsOptions tls = Serving(pki_.server_cert, pki_.server_key, pki_.ca);
  ASSERT_THAT(StartServer(tls), IsOk());
  EXPECT_THAT(
      Call(Channel(Trusting(pki_.ca, pki_.client_cert, pki_.client_key))),
      IsOk());
  EXPECT_THAT(Call(Channel(Trusting(pki_.ca))),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(Call(Channel(Trusting(pki_.ca, pki_.expired_client_cert,
                                    pki_.expired_client_key))),
              StatusIs(absl::StatusCode::kUnavailable));
  // A client certificate from another CA.
  absl::StatusOr<CertFiles> foreign =
      MakeCert(dir_.path(), "foreign-client", pki_.other_ca_files(), {},
               -absl::Hours(1), absl::Hours(24), /*is_client=*/true);
  ASSERT_THAT(foreign.status(), IsOk());
  EXPECT_THAT(Call(Channel(Trusting(pki_.ca, foreign->cert, foreign->key))),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(TlsTest, BadFilesAreRefusedAtStartNamingThem) {
  EXPECT_THAT(
      StartServer(Serving(pki_.expired_server_cert, pki_.expired_server_key)),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr(absl::StrCat("certificate ", pki_.expired_server_cert,
                                      " has expired (on"))));
  EXPECT_THAT(StartServer(Serving(pki_.server_cert, pki_.client_key)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(absl::StrCat("key ", pki_.client_key,
                                              " does not match certificate"))));
  EXPECT_THAT(StartServer(Serving(pki_.server_key, pki_.server_key)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is not a PEM certificate")));
  EXPECT_THAT(StartServer(Serving(pki_.server_cert, "")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--tls_cert and --tls_key go together")));
  TlsOptions bad_ca =
      Serving(pki_.server_cert, pki_.server_key, pki_.server_key);
  EXPECT_THAT(StartServer(bad_ca), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("--tls_client_ca")));
}

TEST_F(TlsTest, ChangedCertificateIsUsedForNewConnectionsOldOnesStay) {
  TlsOptions tls = Serving(pki_.server_cert, pki_.server_key);
  tls.refresh = absl::Seconds(1);
  ASSERT_THAT(StartServer(tls), IsOk());
  std::shared_ptr<grpc::Channel> old_client = Channel(Trusting(pki_.ca));
  ASSERT_THAT(Call(old_client), IsOk());

  // The operator renews the certificate in place, from another CA.
  CertFiles files{pki_.server_cert, pki_.server_key};
  const std::string dir = dir_.path();
  const std::string name = "server";
  absl::StatusOr<CertFiles> renewed = MakeCert(
      dir, name, pki_.other_ca_files(), {"DNS:localhost", "IP:127.0.0.1"});
  ASSERT_THAT(renewed.status(), IsOk());
  ASSERT_EQ(renewed->cert, files.cert) << "renewed in place";

  // gRPC's file watcher reads the files every `refresh`: poll (bounded)
  // until a new client that trusts only the new CA gets through.
  EXPECT_TRUE(
      PollUntil([&] { return Call(Channel(Trusting(pki_.other_ca))).ok(); },
                absl::Seconds(20), absl::Milliseconds(200)))
      << "the renewed certificate was never served";
  // The connection made before the change was not dropped.
  EXPECT_THAT(Call(old_client), IsOk());
}

}  // namespace
}  // namespace ferry::testing
