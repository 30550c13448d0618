#ifndef FERRY_TESTS_SERVER_FIXTURE_H_
#define FERRY_TESTS_SERVER_FIXTURE_H_

// A gtest fixture that runs a real FerryServer over loopback: a SqliteStore
// in a fresh directory, a FakeClock, no ticker thread, and stubs for both
// services. Time moves only when the test calls Advance() (or Tick() after
// moving the clock itself); nothing sleeps.
//
//   class JobsApiTest : public ServerTest {};
//   TEST_F(JobsApiTest, CancelledJobStaysCancelled) {
//     FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "payload"));
//     ASSERT_THAT(Cancel(job.id()), IsOk());
//     EXPECT_THAT(Get(job.id()), ...);
//   }
//
// Every RPC made through the helpers carries a deadline (kRpcTimeout), so a
// broken server fails a test instead of hanging it.

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "ferry/v1/workers.grpc.pb.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "proto/grpc_status.h"
#include "proto/time_util.h"
#include "server/server.h"
#include "storage/store.h"
#include "tests/fake_clock.h"
#include "tests/poll.h"
#include "tests/proto_test_util.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"
#include "tests/test_worker.h"

namespace ferry::testing {

// The deadline of every RPC a helper makes. Far beyond a healthy call on
// loopback: it only bounds a test that would otherwise hang.
inline constexpr absl::Duration kRpcTimeout = absl::Seconds(10);

class ServerTest : public ::testing::Test {
 protected:
  ServerTest() {
    options_.listen = "127.0.0.1:0";
    options_.tick_interval = absl::ZeroDuration();
    // Bounds a shutdown that waits for a stream nobody closes; test workers
    // close theirs on Drain, so a healthy Restart() never waits this long.
    options_.shutdown_grace = absl::Seconds(5);
  }

  // Subclasses may change options_ in their constructor.
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(StartServer()); }

  void TearDown() override { StopServer(); }

  // ---- the server ----

  // Shuts the broker down gracefully, reopens the store from the same
  // directory, and starts again on a new port with new stubs. Test workers
  // connected before get a Drain and close their streams; connect new ones.
  void Restart() {
    StopServer();
    ASSERT_NO_FATAL_FAILURE(StartServer());
  }

  // Runs the broker's time-driven work at the fake clock's now, then lets
  // the writes it started commit (see Settle).
  void Tick() {
    server_->broker()->Tick();
    Settle();
  }

  // Moves the fake clock, then Tick()s.
  void Advance(absl::Duration d) {
    clock_.Advance(d);
    Tick();
  }

  // Returns once the writes the broker has queued so far are committed and
  // their completions have run, with every write those completions queued
  // in turn (a promoted job is leased, a stored job goes to a waiting
  // worker).
  void Settle() {
    ASSERT_TRUE(store_->Quiesce(kRpcTimeout))
        << "store writes did not settle within " << kRpcTimeout;
  }

  // Proves that `worker` has everything the broker will send it for what
  // happened so far, without waiting for an absence: the first Sync shows
  // the broker handled every message the worker sent; Settle commits the
  // writes those messages (and earlier RPCs) started, whose completions
  // push assignments and acks; the second Sync's reply is queued behind
  // anything those pushed, so once it arrives the inbox is complete.
  void Quiesce(TestWorker& worker) {
    ASSERT_TRUE(worker.Sync()) << "first sync with the broker failed";
    Settle();
    ASSERT_TRUE(worker.Sync()) << "second sync with the broker failed";
  }

  absl::Time Now() const { return clock_.Now(); }
  FakeClock& clock() { return clock_; }
  FerryServer& server() { return *server_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  v1::Jobs::Stub& jobs() { return *jobs_; }
  v1::Workers::Stub& workers() { return *workers_; }

  // A worker on the current channel. It sends its Hello at once (unless
  // options.send_hello is false).
  std::unique_ptr<TestWorker> Connect(TestWorkerOptions options) {
    if (options.token.empty()) options.token = token_;
    return std::make_unique<TestWorker>(channel_, std::move(options));
  }
  std::unique_ptr<TestWorker> Connect(absl::string_view worker_id,
                                      absl::string_view queue,
                                      uint32_t initial_credits) {
    TestWorkerOptions options;
    options.worker_id = std::string(worker_id);
    options.queues = {std::string(queue)};
    options.initial_credits = initial_credits;
    return Connect(std::move(options));
  }

  // ---- RPCs ----

  // Calls `method` on `stub` with a kRpcTimeout deadline, and the
  // fixture's token (token_) if it has one.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(
      Stub& stub,
      grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                   Response*),
      const Request& request) {
    return CallAs(token_, stub, method, request);
  }

  // As Call, with `token` ("authorization: Bearer <token>"; none if empty).
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> CallAs(
      absl::string_view token, Stub& stub,
      grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                   Response*),
      const Request& request) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    if (!token.empty()) {
      ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    }
    Response response;
    grpc::Status status = (stub.*method)(&ctx, request, &response);
    if (!status.ok()) return FromGrpcStatus(status);
    return response;
  }

  absl::StatusOr<v1::SubmitResponse> Submit(const v1::JobSpec& spec) {
    v1::SubmitRequest request;
    *request.mutable_job() = spec;
    return Call(jobs(), &v1::Jobs::Stub::Submit, request);
  }

  // Submits a job and returns it as the broker stored it (without payload).
  absl::StatusOr<v1::Job> Submit(absl::string_view queue,
                                 absl::string_view kind,
                                 absl::string_view payload) {
    absl::StatusOr<v1::SubmitResponse> response =
        Submit(Spec(queue, kind, payload));
    if (!response.ok()) return response.status();
    return response->job();
  }

  absl::StatusOr<v1::SubmitBatchResponse> SubmitBatch(
      const std::vector<v1::JobSpec>& specs) {
    v1::SubmitBatchRequest request;
    for (const v1::JobSpec& spec : specs) *request.add_jobs() = spec;
    return Call(jobs(), &v1::Jobs::Stub::SubmitBatch, request);
  }

  // The job with payload and result (the FULL view).
  absl::StatusOr<v1::Job> Get(absl::string_view id) {
    v1::GetRequest request;
    request.set_job_id(std::string(id));
    absl::StatusOr<v1::GetResponse> response =
        Call(jobs(), &v1::Jobs::Stub::Get, request);
    if (!response.ok()) return response.status();
    return response->job();
  }

  absl::StatusOr<v1::Job> Cancel(absl::string_view id,
                                 absl::string_view reason = "") {
    v1::CancelRequest request;
    request.set_job_id(std::string(id));
    request.set_reason(std::string(reason));
    absl::StatusOr<v1::CancelResponse> response =
        Call(jobs(), &v1::Jobs::Stub::Cancel, request);
    if (!response.ok()) return response.status();
    return response->job();
  }

  absl::StatusOr<v1::Job> Retry(absl::string_view id) {
    v1::RetryRequest request;
    request.set_job_id(std::string(id));
    absl::StatusOr<v1::RetryResponse> response =
        Call(jobs(), &v1::Jobs::Stub::Retry, request);
    if (!response.ok()) return response.status();
    return response->job();
  }

  absl::StatusOr<v1::QueueStatsResponse> AllStats() {
    return Call(jobs(), &v1::Jobs::Stub::QueueStats, v1::QueueStatsRequest());
  }

  // The counts of one queue.
  absl::StatusOr<v1::QueueInfo> Stats(absl::string_view queue) {
    v1::QueueStatsRequest request;
    request.set_queue(std::string(queue));
    absl::StatusOr<v1::QueueStatsResponse> response =
        Call(jobs(), &v1::Jobs::Stub::QueueStats, request);
    if (!response.ok()) return response.status();
    if (response->queues_size() != 1) {
      return absl::InternalError(
          absl::StrCat("QueueStats for ", queue, " returned ",
                       response->queues_size(), " queues"));
    }
    return response->queues(0);
  }

  absl::Status Pause(absl::string_view queue) {
    v1::PauseQueueRequest request;
    request.set_queue(std::string(queue));
    return Call(jobs(), &v1::Jobs::Stub::PauseQueue, request).status();
  }

  absl::Status Resume(absl::string_view queue) {
    v1::ResumeQueueRequest request;
    request.set_queue(std::string(queue));
    return Call(jobs(), &v1::Jobs::Stub::ResumeQueue, request).status();
  }

  absl::StatusOr<std::vector<v1::WorkerInfo>> ListWorkers() {
    absl::StatusOr<v1::ListWorkersResponse> response =
        Call(jobs(), &v1::Jobs::Stub::ListWorkers, v1::ListWorkersRequest());
    if (!response.ok()) return response.status();
    return std::vector<v1::WorkerInfo>(response->workers().begin(),
                                       response->workers().end());
  }

  // Polls `condition` until it holds or `timeout` (real time) passes. For
  // the few events the API cannot report (a call registered inside the
  // broker); a poll interval, not a wait for time to pass.
  static bool Eventually(const std::function<bool()>& condition,
                         absl::Duration timeout = kRpcTimeout) {
    return PollUntil(condition, timeout, absl::Milliseconds(1));
  }

  // Waits until the broker has registered a Wait or Watch whose deadline
  // is at or before `deadline`: its next tick is then no later than that.
  // No API reports it, so this polls (bounded) in-process state.
  void AwaitWatcherWithDeadline(absl::Time deadline) {
    ASSERT_TRUE(Eventually([&] {
      return server().broker()->NextTickTime() <= deadline;
    })) << "the broker never registered the Wait";
  }

  ServerOptions options_;
  // The token the helpers' calls and workers carry; none if empty.
  std::string token_;

 private:
  void StartServer() {
    ASSERT_FALSE(dir_.path().empty());
    absl::StatusOr<std::unique_ptr<Store>> store =
        OpenTempSqliteStore(dir_.path());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    absl::StatusOr<std::unique_ptr<FerryServer>> server =
        FerryServer::Start(store_.get(), &clock_, options_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);  // as the SDKs: payloads over 4 MiB
    channel_ = grpc::CreateCustomChannel(
        server_->address(), grpc::InsecureChannelCredentials(), args);
    ASSERT_TRUE(channel_->WaitForConnected(
        absl::ToChronoTime(absl::Now() + kRpcTimeout)))
        << "cannot connect to " << server_->address();
    jobs_ = v1::Jobs::NewStub(channel_);
    workers_ = v1::Workers::NewStub(channel_);
  }

  void StopServer() {
    jobs_.reset();
    workers_.reset();
    channel_.reset();
    if (server_ != nullptr) server_->Shutdown();
    server_.reset();
    store_.reset();
  }

  ScopedTempDir dir_;
  FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<FerryServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Jobs::Stub> jobs_;
  std::unique_ptr<v1::Workers::Stub> workers_;
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_SERVER_FIXTURE_H_
