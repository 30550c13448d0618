#ifndef FERRY_TESTS_FAKE_BROKER_H_
#define FERRY_TESTS_FAKE_BROKER_H_

// A stand-in for ferryd that checks TLS and tokens the way ferryd does, for
// the client side's tests (channels, the SDKs, the CLI) without the broker:
// a gRPC server on 127.0.0.1 with its own Jobs and Workers services that
// record the "authorization" header of every call and answer
//   no token, or one it does not know:   UNAUTHENTICATED
//   a known token it is told to refuse:  PERMISSION_DENIED naming the token
//   otherwise:                           a canned answer (see below)
// With no tokens configured it lets every call through.
//
//   FakeBroker::Options options;
//   options.tokens = {{"ferry_secret", "billing"}};
//   FERRY_ASSERT_OK_AND_ASSIGN(auto broker, FakeBroker::Start(options));
//   ... dial broker->address() ...
//   EXPECT_THAT(broker->Authorizations(), ElementsAre("Bearer ferry_secret"));

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/read_file.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "ferry/v1/workers.grpc.pb.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/server_context.h"

namespace ferry::testing {

class FakeBroker {
 public:
  struct Options {
    // PEM files of the server's certificate and key; empty: plaintext.
    std::string server_cert;
    std::string server_key;
    // PEM file of the CA client certificates must chain to; set: a client
    // certificate is required (mutual TLS).
    std::string client_ca;
    // Known secrets, each with its token's name; empty: no token needed.
    std::map<std::string, std::string> tokens;
    // Names of known tokens whose calls get PERMISSION_DENIED.
    std::set<std::string> refused;
  };

  static absl::StatusOr<std::unique_ptr<FakeBroker>> Start(Options options) {
    std::unique_ptr<FakeBroker> broker(new FakeBroker(std::move(options)));
    std::shared_ptr<grpc::ServerCredentials> credentials =
        grpc::InsecureServerCredentials();
    const Options& o = broker->options_;
    if (!o.server_cert.empty()) {
      grpc::SslServerCredentialsOptions ssl;
      absl::StatusOr<std::string> cert = ReadFileToString(o.server_cert);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadFileToString(o.server_key);
      if (!key.ok()) return key.status();
      ssl.pem_key_cert_pairs.push_back({*key, *cert});
      if (!o.client_ca.empty()) {
        absl::StatusOr<std::string> ca = ReadFileToString(o.client_ca);
        if (!ca.ok()) return ca.status();
        ssl.pem_root_certs = *ca;
        ssl.client_certificate_request =
            GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
      }
      credentials = grpc::SslServerCredentials(ssl);
    }
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", credentials, &port);
    builder.RegisterService(&broker->jobs_);
    builder.RegisterService(&broker->workers_);
    broker->server_ = builder.BuildAndStart();
    if (broker->server_ == nullptr || port == 0) {
      return absl::InternalError("the fake broker did not start");
    }
    broker->address_ = absl::StrCat("127.0.0.1:", port);
    return broker;
  }

  ~FakeBroker() {
    if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now()));
  }

  const std::string& address() const { return address_; }

  // The "authorization" header of every call so far, in order ("" for a
  // call without one).
  std::vector<std::string> Authorizations() {
    absl::MutexLock lock(&mu_);
    return authorizations_;
  }

  // Waits up to `timeout` for `n` calls to have arrived; whether they did.
  bool AwaitCalls(size_t n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    const auto arrived = [this, n]() {
      mu_.AssertReaderHeld();
      return authorizations_.size() >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&arrived), timeout);
  }

 private:
  explicit FakeBroker(Options options)
      : options_(std::move(options)), jobs_(this), workers_(this) {}

  // Records the call's token and decides as ferryd would.
  grpc::Status Check(grpc::ServerContext* context, absl::string_view what) {
    std::string authorization;
    const auto& metadata = context->client_metadata();
    if (auto it = metadata.find("authorization"); it != metadata.end()) {
      authorization.assign(it->second.data(), it->second.size());
    }
    {
      absl::MutexLock lock(&mu_);
      authorizations_.push_back(authorization);
    }
    if (options_.tokens.empty()) return grpc::Status::OK;
    const std::string secret = absl::StartsWith(authorization, "Bearer ")
                                   ? authorization.substr(7)
                                   : std::string();
    const auto token = options_.tokens.find(secret);
    if (token == options_.tokens.end()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          secret.empty() ? "no token" : "unknown token");
    }
    if (options_.refused.count(token->second) > 0) {
      return grpc::Status(
          grpc::StatusCode::PERMISSION_DENIED,
          absl::StrCat("token \"", token->second, "\" may not ", what));
    }
    return grpc::Status::OK;
  }

  class Jobs : public v1::Jobs::Service {
   public:
    explicit Jobs(FakeBroker* broker) : broker_(broker) {}
    grpc::Status Submit(grpc::ServerContext* context,
                        const v1::SubmitRequest* request,
                        v1::SubmitResponse* response) override {
      grpc::Status status = broker_->Check(
          context, absl::StrCat("submit to queue \"", request->job().queue(),
                                "\" (it lacks role submit)"));
      if (!status.ok()) return status;
      response->mutable_job()->set_id("1");
      response->mutable_job()->set_queue(request->job().queue());
      response->set_created(true);
      return grpc::Status::OK;
    }
    grpc::Status QueueStats(grpc::ServerContext* context,
                            const v1::QueueStatsRequest*,
                            v1::QueueStatsResponse* response) override {
      grpc::Status status = broker_->Check(context, "read queues");
      if (!status.ok()) return status;
      response->add_queues()->set_name("fake");
      return grpc::Status::OK;
    }
    // One update: the job, SUCCEEDED.
    grpc::Status Watch(grpc::ServerContext* context,
                       const v1::WatchRequest* request,
                       grpc::ServerWriter<v1::WatchResponse>* writer) override {
      grpc::Status status = broker_->Check(context, "watch jobs");
      if (!status.ok()) return status;
      v1::WatchResponse response;
      response.mutable_job()->set_id(request->job_id());
      response.mutable_job()->set_state(v1::JOB_STATE_SUCCEEDED);
      writer->Write(response);
      return grpc::Status::OK;
    }

   private:
    FakeBroker* const broker_;
  };

  // Connect answers the token check, or UNAVAILABLE: this broker takes no
  // workers, it only shows what they send.
  class Workers : public v1::Workers::Service {
   public:
    explicit Workers(FakeBroker* broker) : broker_(broker) {}
    grpc::Status Connect(
        grpc::ServerContext* context,
        grpc::ServerReaderWriter<v1::ServerMessage, v1::WorkerMessage>*)
        override {
      grpc::Status status = broker_->Check(context, "work");
      if (!status.ok()) return status;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the fake broker takes no workers");
    }

   private:
    FakeBroker* const broker_;
  };

  const Options options_;
  Jobs jobs_;
  Workers workers_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  absl::Mutex mu_;
  std::vector<std::string> authorizations_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_FAKE_BROKER_H_
