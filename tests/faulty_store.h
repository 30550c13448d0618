#ifndef FERRY_TESTS_FAULTY_STORE_H_
#define FERRY_TESTS_FAULTY_STORE_H_

// Stores for tests that need storage to misbehave or to pause: FaultyStore
// fails the next write of a kind; WriterGate holds the writer's callbacks
// so a test can act between a write being queued and its completion.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "storage/store.h"
#include "tests/store_test_util.h"

namespace ferry::testing {

// A Store that forwards to a real one, except that a test can make the next
// write of a kind fail (a storage error, say).
class FaultyStore final : public Store {
 public:
  enum class Write { kFinish, kRelease, kPromote, kLease, kCount };

  explicit FaultyStore(std::unique_ptr<Store> inner)
      : inner_(std::move(inner)) {}

  void FailNext(Write write, absl::Status status) {
    absl::MutexLock lock(&mu_);
    faults_[static_cast<int>(write)] = std::move(status);
  }
  // Every write of a kind fails with `status` (a full disk) until Heal.
  void FailAlways(Write write, absl::Status status) {
    absl::MutexLock lock(&mu_);
    always_[static_cast<int>(write)] = std::move(status);
  }
  void Heal(Write write) {
    absl::MutexLock lock(&mu_);
    always_[static_cast<int>(write)] = absl::OkStatus();
  }
  // How many writes of a kind were tried (failed ones included).
  int Attempts(Write write) {
    absl::MutexLock lock(&mu_);
    return attempts_[static_cast<int>(write)];
  }

  void CreateJobs(std::vector<JobRecord> jobs,
                  ResultCallback<std::vector<CreateResult>> done) override {
    inner_->CreateJobs(std::move(jobs), std::move(done));
  }
  void LeaseJob(int64_t id, LeaseGrant grant,
                ResultCallback<JobRecord> done) override {
    if (Faulted(Write::kLease, done)) return;
    inner_->LeaseJob(id, std::move(grant), std::move(done));
  }
  void FinishAttempt(int64_t id, std::string lease_token,
                     AttemptOutcome outcome,
                     ResultCallback<JobRecord> done) override {
    if (Faulted(Write::kFinish, done)) return;
    inner_->FinishAttempt(id, std::move(lease_token), std::move(outcome),
                          std::move(done));
  }
  void ReleaseLease(int64_t id, std::string lease_token, absl::Time now,
                    ResultCallback<JobRecord> done) override {
    if (Faulted(Write::kRelease, done)) return;
    inner_->ReleaseLease(id, std::move(lease_token), now, std::move(done));
  }
  void SetProgress(int64_t id, std::string lease_token, int32_t percent,
                   std::string message, absl::Time now,
                   ResultCallback<JobRecord> done) override {
    inner_->SetProgress(id, std::move(lease_token), percent, std::move(message),
                        now, std::move(done));
  }
  void CancelJob(int64_t id, std::string reason, absl::Time now,
                 ResultCallback<CancelResult> done) override {
    inner_->CancelJob(id, std::move(reason), now, std::move(done));
  }
  void RetryJob(int64_t id, absl::Time now,
                ResultCallback<JobRecord> done) override {
    inner_->RetryJob(id, now, std::move(done));
  }
  void PromoteDueJobs(absl::Time now, int limit,
                      ResultCallback<std::vector<JobKey>> done) override {
    if (Faulted(Write::kPromote, done)) return;
    inner_->PromoteDueJobs(now, limit, std::move(done));
  }
  void DeleteJobs(std::string queue, JobState state, int limit,
                  ResultCallback<std::vector<JobKey>> done) override {
    inner_->DeleteJobs(std::move(queue), state, limit, std::move(done));
  }
  void DeleteFinishedBefore(absl::Time cutoff, int limit,
                            ResultCallback<int64_t> done) override {
    inner_->DeleteFinishedBefore(cutoff, limit, std::move(done));
  }
  void SetQueuePaused(std::string queue, bool paused,
                      ResultCallback<bool> done) override {
    inner_->SetQueuePaused(std::move(queue), paused, std::move(done));
  }
  void Flush() override { inner_->Flush(); }
  bool Quiesce(absl::Duration timeout) override {
    return inner_->Quiesce(timeout);
  }

  absl::StatusOr<JobRecord> GetJob(int64_t id, bool with_payload) override {
    return inner_->GetJob(id, with_payload);
  }
  absl::StatusOr<std::vector<JobRecord>> ListJobs(
      const ListFilter& filter) override {
    return inner_->ListJobs(filter);
  }
  absl::StatusOr<std::vector<QueueCount>> CountJobs(
      absl::string_view queue) override {
    return inner_->CountJobs(queue);
  }
  absl::StatusOr<std::vector<std::string>> PausedQueues() override {
    return inner_->PausedQueues();
  }
  absl::StatusOr<LiveJobs> LoadLiveJobs() override {
    return inner_->LoadLiveJobs();
  }
  absl::StatusOr<std::optional<absl::Time>> NextScheduledTime() override {
    return inner_->NextScheduledTime();
  }
  int64_t CommitCount() const override { return inner_->CommitCount(); }

 private:
  // If a fault is set for `write`, clears it and fails `done` with it: in
  // order with the other writes, on the store's thread (the broker calls in
  // holding its lock), writing nothing.
  template <typename T>
  bool Faulted(Write write, ResultCallback<T>& done) {
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      const int kind = static_cast<int>(write);
      ++attempts_[kind];
      status = std::exchange(faults_[kind], absl::OkStatus());
      if (status.ok()) status = always_[kind];
    }
    if (status.ok()) return false;
    inner_->SetQueuePaused(
        "fault", /*paused=*/false,
        [done = std::move(done), status](absl::StatusOr<bool>) mutable {
          std::move(done)(status);
        });
    return true;
  }

  const std::unique_ptr<Store> inner_;
  absl::Mutex mu_;
  absl::Status faults_[static_cast<int>(Write::kCount)] ABSL_GUARDED_BY(mu_);
  absl::Status always_[static_cast<int>(Write::kCount)] ABSL_GUARDED_BY(mu_);
  int attempts_[static_cast<int>(Write::kCount)] ABSL_GUARDED_BY(mu_) = {};
};

// Holds the store's writer thread inside a callback until Open(), so that
// the writes the broker queues meanwhile stay uncommitted: a test can act
// between a write being queued and its completion. The gate is a write of
// its own, queued at construction: writes queued before it complete first.
class WriterGate {
 public:
  explicit WriterGate(Store& store) : state_(std::make_shared<State>()) {
    store.SetQueuePaused(
        "writer-gate", /*paused=*/false,
        [state = state_](absl::StatusOr<bool>) {
          state->entered.Notify();
          state->open.WaitForNotificationWithTimeout(kCallbackTimeout);
        });
  }
  WriterGate(const WriterGate&) = delete;
  WriterGate& operator=(const WriterGate&) = delete;
  ~WriterGate() { Open(); }

  // Waits until the store's callbacks are held at the gate: every write
  // queued before the gate has completed. Writes queued after it still
  // commit, but their callbacks wait until the gate opens. False if the
  // gate is never reached.
  bool WaitHeld() {
    return state_->entered.WaitForNotificationWithTimeout(kCallbackTimeout);
  }
  void Open() {
    if (!state_->open.HasBeenNotified()) state_->open.Notify();
  }

 private:
  struct State {
    absl::Notification entered;
    absl::Notification open;
  };
  std::shared_ptr<State> state_;
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_FAULTY_STORE_H_
