// The client and worker SDKs dial through client/connect.h: their
// ConnectOptions put the token on their calls and TLS on their channel, and
// bad options are an error from the first call (Client) or Run (Worker).
// Against a FakeBroker, which checks tokens and TLS as ferryd does.

#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fake_broker.h"
#include "tests/log_capture.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"
#include "tests/tls_certs.h"
#include "worker/worker.h"

namespace ferry::testing {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

constexpr char kToken[] = "ferry_sdkTokenQ7wE9rT1yU3iO5pA7sD9fG1hJ3kL5zX7cV";
constexpr absl::Duration kEventTimeout = absl::Seconds(10);

class ConnectSdkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    FERRY_ASSERT_OK_AND_ASSIGN(pki_, MakeTestPki(dir_.path()));
  }

  ScopedTempDir dir_;
  TestPki pki_;
};

TEST_F(ConnectSdkTest, ClientSendsItsTokenOverTls) {
  FakeBroker::Options broker_options;
  broker_options.server_cert = pki_.server_cert;
  broker_options.server_key = pki_.server_key;
  broker_options.tokens = {{kToken, "sdk"}};
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(broker_options));
  ClientOptions options;
  options.broker = broker->address();
  options.connect.tls_ca = pki_.ca;
  options.connect.token = kToken;
  Client client(options);
  FERRY_ASSERT_OK_AND_ASSIGN(auto queues, client.QueueStats());
  ASSERT_THAT(queues, SizeIs(1));
  EXPECT_EQ(queues[0].name(), "fake");
  SubmitOptions submit;
  submit.queue = "q";
  EXPECT_THAT(client.Submit(submit), IsOk());
  EXPECT_THAT(broker->Authorizations(),
              AllOf(SizeIs(2), Each(absl::StrCat("Bearer ", kToken))));
}

TEST_F(ConnectSdkTest, ClientWithoutTheTokenGetsTheBrokersRefusal) {
  FakeBroker::Options broker_options;
  broker_options.tokens = {{kToken, "sdk"}};
  broker_options.refused = {"sdk"};
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(broker_options));
  ClientOptions options;
  options.broker = broker->address();
  EXPECT_THAT(Client(options).QueueStats(),
              StatusIs(absl::StatusCode::kUnauthenticated));
  options.connect.token = kToken;
  EXPECT_THAT(Client(options).QueueStats(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("token \"sdk\" may not read queues")));
}

TEST_F(ConnectSdkTest, ClientWithBadConnectOptionsFailsEveryCallSayingWhy) {
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start({}));
  ClientOptions options;
  options.broker = broker->address();
  options.connect.tls_ca = pki_.ca;
  options.connect.tls_cert = pki_.expired_client_cert;
  options.connect.tls_key = pki_.expired_client_key;
  options.connect.token = kToken;
  Client client(options);
  const auto expired = StatusIs(
      absl::StatusCode::kInvalidArgument,
      AllOf(HasSubstr(absl::StrCat("client certificate ",
                                   pki_.expired_client_cert, " has expired")),
            Not(HasSubstr(kToken))));
  EXPECT_THAT(client.QueueStats(), expired);
  EXPECT_THAT(client.Get("1"), expired);
  EXPECT_THAT(client.Watch("1", [](const v1::Job&) { return true; }), expired);
  EXPECT_THAT(client.ListWorkers(), expired);
  EXPECT_THAT(broker->Authorizations(), SizeIs(0));
}

TEST_F(ConnectSdkTest, WorkerSendsItsTokenOnConnect) {
  FakeBroker::Options broker_options;
  broker_options.tokens = {{kToken, "worker"}};
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(broker_options));
  WorkerOptions options;
  options.broker = broker->address();
  options.queues = {"q"};
  options.connect.token = kToken;
  options.reconnect_initial = absl::Milliseconds(1);
  options.reconnect_max = absl::Milliseconds(1);
  Worker worker(options);
  absl::Status result;
  std::thread run([&] { result = worker.Run(); });
  EXPECT_TRUE(broker->AwaitCalls(1, kEventTimeout));
  worker.Stop();
  run.join();
  EXPECT_THAT(result, IsOk());
  EXPECT_EQ(broker->Authorizations().front(), absl::StrCat("Bearer ", kToken));
}

TEST_F(ConnectSdkTest, WorkerRefusedForWantOfATokenSaysSoAndKeepsTrying) {
  FakeBroker::Options broker_options;
  broker_options.tokens = {{kToken, "worker"}};
  FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(broker_options));
  LogCapture log;
  WorkerOptions options;
  options.broker = broker->address();
  options.queues = {"q"};
  options.reconnect_initial = absl::Milliseconds(1);
  options.reconnect_max = absl::Milliseconds(1);
  Worker worker(options);
  std::thread run([&] { (void)worker.Run(); });
  // The second call comes after the first refusal was logged.
  EXPECT_TRUE(broker->AwaitCalls(2, kEventTimeout));
  worker.Stop();
  run.join();
  EXPECT_THAT(log.Text(), HasSubstr("broker refused the worker's token"));
  EXPECT_THAT(log.Text(), HasSubstr("the broker needs a token"));
}

TEST_F(ConnectSdkTest, WorkerWithBadConnectOptionsReturnsTheErrorFromRun) {
  LogCapture log;
  WorkerOptions options;
  options.broker = "127.0.0.1:1";
  options.queues = {"q"};
  options.connect.tls_ca = dir_.path() + "/missing.crt";
  options.connect.token = kToken;
  Worker worker(options);
  EXPECT_THAT(worker.Run(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("cannot read"), HasSubstr("missing.crt"),
                             Not(HasSubstr(kToken)))));
  EXPECT_THAT(log.Text(), Not(HasSubstr(kToken)));
}

}  // namespace
}  // namespace ferry::testing
