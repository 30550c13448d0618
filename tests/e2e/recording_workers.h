#ifndef FERRY_TESTS_E2E_RECORDING_WORKERS_H_
#define FERRY_TESTS_E2E_RECORDING_WORKERS_H_

// SDK workers for drills that kill ferryd under them: each records into a
// history (tests/tools/history.h) every job it is given, the result it
// sends and every acknowledgement, and reconnects at once when the broker
// comes back. Each runs on its own thread until Stop.

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "ferry/v1/workers.pb.h"
#include "tests/tools/history.h"
#include "worker/worker.h"

namespace ferry::testing {

class RecordingWorkers {
 public:
  // `count` workers named PREFIX-0.. on `queue`, `concurrency` slots each.
  // Each job succeeds with "ID/ATTEMPT". `on_ack`, if set, also hears every
  // acknowledgement (on a worker thread).
  RecordingWorkers(history::Recorder* recorder, const std::string& address,
                   const std::string& queue, const std::string& prefix,
                   int count, int concurrency,
                   std::function<void(const v1::ResultAck&)> on_ack) {
    for (int w = 0; w < count; ++w) {
      WorkerOptions options;
      options.broker = address;
      options.queues = {queue};
      options.concurrency = concurrency;
      options.worker_id = absl::StrCat(prefix, "-", w);
      options.reconnect_initial = absl::Milliseconds(10);
      options.reconnect_max = absl::Milliseconds(100);
      // The broker is killed: do not wait long for acks that cannot come.
      options.drain_timeout = absl::Milliseconds(100);
      options.on_result_ack = [recorder, on_ack](const v1::ResultAck& ack) {
        const int64_t id = history::IdOf(ack.job_id());
        recorder->ResultOk(id, ack.lease_token());
        if (ack.state() == v1::JOB_STATE_SUCCEEDED) {
          recorder->Observed(id, JobState::kSucceeded);
        }
        if (on_ack) on_ack(ack);
      };
      auto worker = std::make_unique<Worker>(options);
      worker->HandleDefault([recorder](JobContext& job) {
        const int64_t id = history::IdOf(job.id());
        recorder->Leased(id, job.lease_token(),
                         static_cast<int32_t>(job.attempt()));
        const std::string result = absl::StrCat(id, "/", job.attempt());
        recorder->ResultSent(id, job.lease_token(), result);
        return JobOutcome::Success(result);
      });
      workers_.push_back(std::move(worker));
    }
    for (auto& worker : workers_) {
      threads_.emplace_back([w = worker.get()] { (void)w->Run(); });
    }
  }
  ~RecordingWorkers() { Stop(); }

  void Stop() {
    if (threads_.empty()) return;  // stopped already
    for (auto& worker : workers_) worker->Stop();
    for (std::thread& t : threads_) t.join();
    threads_.clear();
  }

 private:
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_E2E_RECORDING_WORKERS_H_
