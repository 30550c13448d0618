#ifndef FERRY_TESTS_TEST_WORKER_H_
#define FERRY_TESTS_TEST_WORKER_H_

// A worker for integration tests, written against the generated stub only
// (as a worker in another language would be): one Workers.Connect stream, a
// reader thread that files every ServerMessage into an inbox, and calls that
// wait, with a bounded real-time timeout, for a message to arrive. Waiting
// here is waiting for an event that should come promptly, never for time to
// pass: time is the FakeClock's job.
//
//   auto worker = Connect("w1", "q", /*initial_credits=*/1);
//   std::optional<v1::Assignment> a = worker->ExpectAssignment();
//   ASSERT_TRUE(a.has_value());
//   worker->Succeed(a->lease_token(), "done");
//   EXPECT_TRUE(worker->ExpectResultAck().has_value());
//
// To show that something did NOT arrive, synchronise first (Sync(), or the
// fixture's Quiesce()) and then look at the inbox (Pending()); no test needs
// to wait for an absence.

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "ferry/v1/workers.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"

namespace ferry::testing {

// How long a test waits for a message that should arrive promptly. Far
// beyond any healthy delivery on loopback: it only bounds a broken test.
inline constexpr absl::Duration kEventTimeout = absl::Seconds(10);

struct TestWorkerOptions {
  std::string worker_id = "worker-1";
  std::vector<std::string> queues = {"q"};
  uint32_t initial_credits = 0;
  // After a reconnect: (job_id, lease_token) pairs still held.
  std::vector<std::pair<std::string, std::string>> held_leases;
  // False: open the stream but send nothing (to test a bad first message).
  bool send_hello = true;
  // On Drain, close the sending side as a real worker does once its results
  // are sent, so that a shutting-down broker need not wait for the stream.
  bool close_on_drain = true;
  // Bounds the whole stream.
  absl::Duration stream_timeout = absl::Seconds(120);
  // Hello.accepts_batches: the broker may then bundle messages into a
  // ServerMessage.batch, which the inbox files as one message.
  bool accepts_batches = false;
  // Sent as "authorization: Bearer <token>" when not empty.
  std::string token;
  // The broker may end the stream before the Hello is written (a refused
  // token): not a test failure; AwaitEnd() tells the status.
  bool hello_may_fail = false;
};

class TestWorker {
 public:
  using Msg = v1::ServerMessage;

  TestWorker(std::shared_ptr<grpc::Channel> channel, TestWorkerOptions options)
      : options_(std::move(options)), stub_(v1::Workers::NewStub(channel)) {
    ctx_.set_deadline(
        absl::ToChronoTime(absl::Now() + options_.stream_timeout));
    if (!options_.token.empty()) {
      ctx_.AddMetadata("authorization", "Bearer " + options_.token);
    }
    stream_ = stub_->Connect(&ctx_);
    reader_ = std::thread([this] { ReadLoop(); });
    if (options_.send_hello) {
      v1::WorkerMessage msg;
      v1::Hello* hello = msg.mutable_hello();
      hello->set_worker_id(options_.worker_id);
      hello->set_hostname("test-host");
      hello->set_pid(4242);
      hello->set_version("test");
      for (const std::string& queue : options_.queues) hello->add_queues(queue);
      for (const auto& [job_id, token] : options_.held_leases) {
        v1::HeldLease* held = hello->add_held_leases();
        held->set_job_id(job_id);
        held->set_lease_token(token);
      }
      hello->set_initial_credits(options_.initial_credits);
      hello->set_accepts_batches(options_.accepts_batches);
      if (!Send(msg) && !options_.hello_may_fail) {
        ADD_FAILURE() << "could not send Hello";
      }
    }
  }

  TestWorker(const TestWorker&) = delete;
  TestWorker& operator=(const TestWorker&) = delete;

  ~TestWorker() { Close(); }

  const std::string& worker_id() const { return options_.worker_id; }

  // ---- sending ----

  // Writes one message; false if the stream is closed or broken.
  bool Send(const v1::WorkerMessage& msg) {
    absl::MutexLock lock(&write_mu_);
    if (writes_done_) return false;
    return stream_->Write(msg);
  }

  void Credit(uint32_t credits) {
    v1::WorkerMessage msg;
    msg.mutable_credit()->set_credits(credits);
    SendOrFail(msg, "Credit");
  }

  void Heartbeat(const std::vector<std::string>& tokens) {
    v1::WorkerMessage msg;
    for (const std::string& token : tokens) {
      msg.mutable_heartbeat()->add_lease_tokens(token);
    }
    SendOrFail(msg, "Heartbeat");
  }

  // A heartbeat that reports progress for `token` (which extends it too).
  void Progress(const std::string& token, uint32_t percent,
                const std::string& message) {
    v1::WorkerMessage msg;
    v1::ProgressUpdate* update = msg.mutable_heartbeat()->add_progress();
    update->set_lease_token(token);
    update->mutable_progress()->set_percent(percent);
    update->mutable_progress()->set_message(message);
    SendOrFail(msg, "Heartbeat with progress");
  }

  // `credits` are returned with the result (Result.credits).
  void Succeed(const std::string& token, const std::string& output,
               uint32_t credits = 0) {
    v1::WorkerMessage msg;
    msg.mutable_result()->set_lease_token(token);
    msg.mutable_result()->mutable_success()->set_output(output);
    msg.mutable_result()->set_credits(credits);
    SendOrFail(msg, "Result (success)");
  }

  void Fail(const std::string& token, const std::string& message,
            bool retryable) {
    v1::WorkerMessage msg;
    msg.mutable_result()->set_lease_token(token);
    msg.mutable_result()->mutable_failure()->set_message(message);
    msg.mutable_result()->mutable_failure()->set_retryable(retryable);
    SendOrFail(msg, "Result (failure)");
  }

  // ---- receiving ----

  // Removes and returns the oldest message, waiting up to `timeout` for one.
  std::optional<Msg> Next(absl::Duration timeout = kEventTimeout) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() {
      mu_.AssertReaderHeld();
      return !inbox_.empty() || ended_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
    if (inbox_.empty()) return std::nullopt;
    Msg msg = std::move(inbox_.front());
    inbox_.pop_front();
    return msg;
  }

  // Removes and returns the oldest message of kind `what`, waiting up to
  // `timeout` for one; other messages stay in the inbox, in order.
  std::optional<Msg> Await(Msg::MsgCase what,
                           absl::Duration timeout = kEventTimeout) {
    return AwaitIf([what](const Msg& m) { return m.msg_case() == what; },
                   timeout);
  }

  // The Expect* calls wait like Await and record a test failure (naming
  // what did arrive) if nothing of that kind came.
  std::optional<v1::Welcome> ExpectWelcome(
      absl::Duration timeout = kEventTimeout) {
    std::optional<Msg> m = Expect(Msg::kWelcome, "Welcome", timeout);
    if (!m) return std::nullopt;
    return m->welcome();
  }
  std::optional<v1::Assignment> ExpectAssignment(
      absl::Duration timeout = kEventTimeout) {
    std::optional<Msg> m = Expect(Msg::kAssignment, "Assignment", timeout);
    if (!m) return std::nullopt;
    return m->assignment();
  }
  std::optional<v1::LeaseLost> ExpectLeaseLost(
      absl::Duration timeout = kEventTimeout) {
    std::optional<Msg> m = Expect(Msg::kLeaseLost, "LeaseLost", timeout);
    if (!m) return std::nullopt;
    return m->lease_lost();
  }
  std::optional<v1::ResultAck> ExpectResultAck(
      absl::Duration timeout = kEventTimeout) {
    std::optional<Msg> m = Expect(Msg::kResultAck, "ResultAck", timeout);
    if (!m) return std::nullopt;
    return m->result_ack();
  }
  std::optional<v1::Cancel> ExpectCancel(
      absl::Duration timeout = kEventTimeout) {
    std::optional<Msg> m = Expect(Msg::kCancel, "Cancel", timeout);
    if (!m) return std::nullopt;
    return m->cancel();
  }

  // Proves the broker has handled every message this worker sent before:
  // sends a heartbeat for a token no broker knows, which the broker answers
  // with a LeaseLost in stream order, and waits for that answer (removing
  // it from the inbox). False if it did not come within `timeout`.
  bool Sync(absl::Duration timeout = kEventTimeout) {
    const std::string token = absl::StrCat("sync-probe-", ++syncs_);
    v1::WorkerMessage msg;
    msg.mutable_heartbeat()->add_lease_tokens(token);
    if (!Send(msg)) return false;
    // To a worker that takes batches the answer may come inside one.
    const auto is_answer = [&token](const Msg& m) {
      return m.has_lease_lost() && m.lease_lost().lease_token() == token;
    };
    return AwaitIf(
               [&is_answer](const Msg& m) {
                 if (is_answer(m)) return true;
                 for (const Msg& inner : m.batch().messages()) {
                   if (is_answer(inner)) return true;
                 }
                 return false;
               },
               timeout)
        .has_value();
  }

  // How many messages of kind `what` are in the inbox now.
  int Pending(Msg::MsgCase what) {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (const Msg& m : inbox_) n += m.msg_case() == what ? 1 : 0;
    return n;
  }

  // The inbox, one message per line, for failure messages.
  std::string DescribeInbox() {
    absl::MutexLock lock(&mu_);
    return DescribeLocked();
  }

  // ---- ending ----

  // Waits up to `timeout` for the broker to end the stream (without closing
  // our side first) and returns the status it ended with; DEADLINE_EXCEEDED
  // if it did not end in time.
  grpc::Status AwaitEnd(absl::Duration timeout = kEventTimeout) {
    {
      absl::MutexLock lock(&mu_);
      if (!mu_.AwaitWithTimeout(absl::Condition(&ended_), timeout)) {
        return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                            "the broker did not end the stream");
      }
    }
    return Close();
  }

  // Closes our side, waits (bounded) for the broker to end the stream,
  // cancels it if it does not, and returns the final status. Idempotent.
  grpc::Status Close() {
    if (finished_) return final_status_;
    {
      absl::MutexLock lock(&write_mu_);
      if (!writes_done_) {
        writes_done_ = true;
        stream_->WritesDone();
      }
    }
    {
      absl::MutexLock lock(&mu_);
      if (!mu_.AwaitWithTimeout(absl::Condition(&ended_), kEventTimeout)) {
        ADD_FAILURE() << "worker " << options_.worker_id
                      << ": the broker did not end the stream after it was "
                         "closed; cancelling";
        ctx_.TryCancel();
      }
    }
    reader_.join();
    final_status_ = stream_->Finish();
    finished_ = true;
    return final_status_;
  }

 private:
  void ReadLoop() {
    Msg msg;
    while (stream_->Read(&msg)) {
      const bool drain = msg.has_drain();
      {
        absl::MutexLock lock(&mu_);
        inbox_.push_back(msg);
      }
      if (drain && options_.close_on_drain) {
        absl::MutexLock lock(&write_mu_);
        if (!writes_done_) {
          writes_done_ = true;
          stream_->WritesDone();
        }
      }
    }
    absl::MutexLock lock(&mu_);
    ended_ = true;
  }

  void SendOrFail(const v1::WorkerMessage& msg, absl::string_view what) {
    if (!Send(msg)) {
      ADD_FAILURE() << "worker " << options_.worker_id << " could not send "
                    << what << ": the stream is closed";
    }
  }

  template <typename Pred>
  std::optional<Msg> AwaitIf(Pred pred, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    // Conditions must be free of side effects (the Mutex may evaluate one
    // several times, on any thread): find here, take after.
    auto match = [&]() {
      mu_.AssertReaderHeld();
      for (const Msg& m : inbox_) {
        if (pred(m)) return true;
      }
      return ended_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&match), timeout);
    for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
      if (pred(*it)) {
        Msg found = std::move(*it);
        inbox_.erase(it);
        return found;
      }
    }
    return std::nullopt;
  }

  std::optional<Msg> Expect(Msg::MsgCase what, absl::string_view name,
                            absl::Duration timeout) {
    std::optional<Msg> m = Await(what, timeout);
    if (!m) {
      absl::MutexLock lock(&mu_);
      ADD_FAILURE() << "worker " << options_.worker_id << " got no " << name
                    << (ended_ ? " (the stream has ended)" : "") << "; inbox:\n"
                    << DescribeLocked();
    }
    return m;
  }

  std::string DescribeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string out;
    for (const Msg& m : inbox_) {
      absl::StrAppend(&out, "  ", m.ShortDebugString(), "\n");
    }
    return out.empty() ? "  (empty)\n" : out;
  }

  const TestWorkerOptions options_;
  std::unique_ptr<v1::Workers::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, Msg>> stream_;
  std::thread reader_;
  // Test thread only.
  int syncs_ = 0;
  bool finished_ = false;
  grpc::Status final_status_;

  // Writes come from the test thread and, on Drain, the reader thread.
  absl::Mutex write_mu_;
  bool writes_done_ ABSL_GUARDED_BY(write_mu_) = false;

  absl::Mutex mu_;
  std::deque<Msg> inbox_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_TEST_WORKER_H_
