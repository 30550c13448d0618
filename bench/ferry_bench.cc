// ferry-bench: load against a running ferryd. See docs/benchmarks.md.
//
//   ferry-bench --broker=127.0.0.1:7070 --mode=e2e --producers=8
//               --workers=8 --jobs=100000 [--batch=100] [--json]
//
// Modes:
//   e2e      N jobs submitted while workers run; throughput is N over first
//            submit -> last result acknowledged.
//   submit   producers only.
//   drain    a queue pre-filled with N jobs (SubmitBatch), then workers.
//   latency  open loop at --rate jobs/s; percentiles of submit-ack -> worker
//            receives, of submit-sent -> worker receives, and of the
//            Submit call itself (submit_*: sent -> acknowledged).
//   backlog  --backlog jobs queued first, then workers take --jobs of them:
//            the dispatch rate with that backlog behind.
//   streams  --idle_streams idle worker streams, then the latency of single
//            jobs while they are connected, and ferryd's threads and RSS
//            (--ferryd_pid).
// Every run checks that each submitted job was received exactly once (no
// faults are injected), else it fails (exit 1).

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/flags_usage.h"
#include "client/connect_flags.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "ferry/v1/workers.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "spdlog/spdlog.h"
#include "worker/worker.h"

ABSL_FLAG(std::string, broker, "127.0.0.1:7070", "ferryd's address.");
ABSL_FLAG(std::string, mode, "e2e", "e2e, submit, drain, latency or streams.");
ABSL_FLAG(int, producers, 8, "Producer connections.");
ABSL_FLAG(int, workers, 8, "Worker connections (worker SDK).");
ABSL_FLAG(int, slots, 16, "Concurrency (credits) per worker.");
ABSL_FLAG(bool, inline_handlers, false,
          "Run the no-op handlers on each connection's network thread "
          "(WorkerOptions::inline_handlers) instead of a thread per slot.");
ABSL_FLAG(int64_t, jobs, 100000, "Jobs per run.");
ABSL_FLAG(int, batch, 1, "Jobs per SubmitBatch call; 1 uses unary Submit.");
ABSL_FLAG(double, rate, 1000, "latency/streams: jobs per second, open loop.");
ABSL_FLAG(int, payload_bytes, 100, "Payload size.");
ABSL_FLAG(std::string, queue, "", "Queue (default: a fresh one per run).");
ABSL_FLAG(int, idle_streams, 1000, "streams: idle worker streams to open.");
ABSL_FLAG(int, ferryd_pid, 0, "streams: ferryd's pid, to read threads/RSS.");
ABSL_FLAG(int64_t, backlog, 100000,
          "backlog: jobs queued before the workers start (--jobs of them "
          "are then taken and timed).");
ABSL_FLAG(bool, fill, true,
          "backlog: queue the backlog first; false reuses --queue as it is.");
ABSL_FLAG(bool, json, false, "Print one JSON object per result.");
ABSL_FLAG(absl::Duration, timeout, absl::Minutes(10), "Give up after this.");

namespace ferry {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             Clock::now().time_since_epoch())
      .count();
}

// TLS and the token of every channel: set by main() before any is made.
ConnectOptions connect_options;

std::shared_ptr<grpc::Channel> NewChannel(const std::string& broker, int i) {
  grpc::ChannelArguments args;
  // A connection of its own for every producer and worker.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("ferry.bench.connection", i);
  args.SetMaxReceiveMessageSize(64 << 20);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      OpenChannel(broker, connect_options, args);
  if (!channel.ok()) {
    // main() checked the files; they changed since.
    std::fprintf(stderr, "ferry-bench: %s\n",
                 std::string(channel.status().message()).c_str());
    std::exit(1);
  }
  return *std::move(channel);
}

struct Result {
  std::string mode;
  int64_t jobs = 0;
  double seconds = 0;
  double jobs_per_s = 0;
  std::vector<std::pair<std::string, int64_t>> extra;  // name -> value
};

void Print(const Result& r, bool json) {
  if (json) {
    std::string out =
        absl::StrCat("{\"mode\":\"", r.mode, "\",\"jobs\":", r.jobs,
                     ",\"seconds\":", absl::StrFormat("%.3f", r.seconds),
                     ",\"jobs_per_s\":", absl::StrFormat("%.0f", r.jobs_per_s),
                     ",\"producers\":", absl::GetFlag(FLAGS_producers),
                     ",\"workers\":", absl::GetFlag(FLAGS_workers),
                     ",\"batch\":", absl::GetFlag(FLAGS_batch));
    for (const auto& [name, value] : r.extra) {
      absl::StrAppend(&out, ",\"", name, "\":", value);
    }
    std::printf("%s}\n", out.c_str());
  } else {
    std::printf("%-8s jobs=%-8lld seconds=%-8.3f jobs/s=%.0f", r.mode.c_str(),
                static_cast<long long>(r.jobs), r.seconds, r.jobs_per_s);
    for (const auto& [name, value] : r.extra) {
      std::printf(" %s=%lld", name.c_str(), static_cast<long long>(value));
    }
    std::printf("\n");
  }
  std::fflush(stdout);
}

// Records which jobs workers received and when; checks exactly-once.
class Ledger {
 public:
  void Received(const std::string& id) {
    const int64_t now = NowUs();
    absl::MutexLock lock(&mu_);
    int64_t& first = received_[id];
    if (first != 0) ++duplicates_;
    first = now;
    if (first_receive_us_ == 0) first_receive_us_ = now;
  }
  int64_t first_receive_us() {
    absl::MutexLock lock(&mu_);
    return first_receive_us_;
  }
  void Acked() {
    absl::MutexLock lock(&mu_);
    ++acked_;
    last_ack_us_ = NowUs();
  }
  // Waits until `n` results are acknowledged or the deadline passes.
  bool WaitAcked(int64_t n, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto done = [this, n]()
                    ABSL_NO_THREAD_SAFETY_ANALYSIS { return acked_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  }
  int64_t last_ack_us() {
    absl::MutexLock lock(&mu_);
    return last_ack_us_;
  }
  int64_t ReceivedAt(const std::string& id) {
    absl::MutexLock lock(&mu_);
    auto it = received_.find(id);
    return it == received_.end() ? 0 : it->second;
  }
  // Empty when no job was received twice and every job received is one of
  // `ids` (not all of them need to be).
  std::string CheckSubset(const std::vector<std::string>& ids) {
    absl::flat_hash_set<std::string> submitted(ids.begin(), ids.end());
    absl::MutexLock lock(&mu_);
    if (duplicates_ > 0)
      return absl::StrCat(duplicates_, " jobs received twice");
    for (const auto& [id, at] : received_) {
      if (!submitted.contains(id))
        return absl::StrCat("unknown job ", id, " received");
    }
    return "";
  }
  int64_t received() {
    absl::MutexLock lock(&mu_);
    return static_cast<int64_t>(received_.size());
  }

  // Empty when every id in `ids` was received exactly once and nothing else.
  std::string Check(const std::vector<std::string>& ids) {
    absl::MutexLock lock(&mu_);
    if (duplicates_ > 0)
      return absl::StrCat(duplicates_, " jobs received twice");
    int64_t missing = 0;
    for (const std::string& id : ids) missing += received_.count(id) == 0;
    if (missing > 0) return absl::StrCat(missing, " jobs never received");
    if (received_.size() != ids.size()) {
      return absl::StrCat(received_.size(), " jobs received, ", ids.size(),
                          " submitted");
    }
    return "";
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int64_t> received_ ABSL_GUARDED_BY(mu_);
  int64_t duplicates_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_ack_us_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t first_receive_us_ ABSL_GUARDED_BY(mu_) = 0;
};

// W Worker SDK instances with no-op handlers.
class WorkerPool {
 public:
  WorkerPool(const std::string& broker, const std::string& queue, int count,
             int slots, Ledger* ledger) {
    for (int i = 0; i < count; ++i) {
      WorkerOptions options;
      options.broker = broker;
      options.queues = {queue};
      options.concurrency = slots;
      options.inline_handlers = absl::GetFlag(FLAGS_inline_handlers);
      options.worker_id = absl::StrCat("bench-", getpid(), "-", i);
      options.channel = NewChannel(broker, 1000 + i);
      options.on_result_ack = [ledger](const v1::ResultAck&) {
        ledger->Acked();
      };
      auto worker = std::make_unique<Worker>(options);
      worker->HandleDefault([ledger](JobContext& ctx) {
        ledger->Received(ctx.id());
        return JobOutcome::Success();
      });
      workers_.push_back(std::move(worker));
    }
    for (auto& worker : workers_) {
      threads_.emplace_back([w = worker.get()] { (void)w->Run(); });
    }
  }
  ~WorkerPool() {
    for (auto& worker : workers_) worker->Stop();
    for (std::thread& t : threads_) t.join();
  }

 private:
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
};

v1::JobSpec Spec(const std::string& queue, const std::string& payload) {
  v1::JobSpec spec;
  spec.set_queue(queue);
  spec.set_kind("bench");
  spec.set_payload(payload);
  return spec;
}

// Submits `jobs` jobs from P producers in a closed loop; returns the ids.
// `sent_us`/`acked_us` (optional) record per-job times.
// One producer connection in a closed loop: one call in flight, the next
// issued from the previous one's completion (gRPC's callback API, so no
// thread waits per producer).
class Producer {
 public:
  Producer(const std::string& broker, int index, const std::string& queue,
           const std::string& payload, int64_t jobs, int batch,
           std::atomic<int64_t>* next, std::atomic<bool>* failed)
      : stub_(v1::Jobs::NewStub(NewChannel(broker, index))),
        queue_(queue),
        payload_(payload),
        jobs_(jobs),
        batch_(batch),
        next_(next),
        failed_(failed) {}

  void Start() { Issue(); }
  // Returns once every call has been issued, answered and destroyed (a
  // call is destroyed after its callback returns; the producer, its stub
  // and channel must outlive that).
  void Wait() {
    done_.WaitForNotification();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* live) { return *live == 0; }, &live_calls_));
  }
  std::vector<std::string>& ids() { return ids_; }

 private:
  // Counts a call as live until its last member is gone.
  struct LiveCall {
    explicit LiveCall(Producer* producer) : producer(producer) {
      absl::MutexLock lock(&producer->mu_);
      ++producer->live_calls_;
    }
    ~LiveCall() {
      absl::MutexLock lock(&producer->mu_);
      --producer->live_calls_;
    }
    Producer* producer;
  };
  struct Call {
    explicit Call(Producer* producer) : live(producer) {}
    LiveCall live;  // first: destroyed last
    grpc::ClientContext ctx;
    v1::SubmitRequest request;
    v1::SubmitResponse response;
    v1::SubmitBatchRequest batch_request;
    v1::SubmitBatchResponse batch_response;
  };

  void Issue() {
    const int64_t start = next_->fetch_add(batch_);
    if (start >= jobs_ || failed_->load()) {
      done_.Notify();
      return;
    }
    auto call = std::make_shared<Call>(this);
    call->ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(60));
    auto finish = [this, call](grpc::Status status) {
      if (!status.ok()) {
        std::fprintf(stderr, "ferry-bench: submit failed: %s\n",
                     status.error_message().c_str());
        failed_->store(true);
      } else if (batch_ == 1) {
        ids_.push_back(call->response.job().id());
      } else {
        for (const auto& r : call->batch_response.results()) {
          ids_.push_back(r.job().id());
        }
      }
      Issue();
    };
    if (batch_ == 1) {
      *call->request.mutable_job() = Spec(queue_, payload_);
      stub_->async()->Submit(&call->ctx, &call->request, &call->response,
                             std::move(finish));
    } else {
      const int64_t count = std::min<int64_t>(batch_, jobs_ - start);
      for (int64_t i = 0; i < count; ++i) {
        *call->batch_request.add_jobs() = Spec(queue_, payload_);
      }
      stub_->async()->SubmitBatch(&call->ctx, &call->batch_request,
                                  &call->batch_response, std::move(finish));
    }
  }

  std::unique_ptr<v1::Jobs::Stub> stub_;
  const std::string queue_;
  const std::string payload_;
  const int64_t jobs_;
  const int batch_;
  std::atomic<int64_t>* const next_;
  std::atomic<bool>* const failed_;
  std::vector<std::string> ids_;  // touched only by this producer's calls
  absl::Notification done_;
  absl::Mutex mu_;
  int live_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// Submits `jobs` jobs from P producers in a closed loop; returns the ids.
std::vector<std::string> Produce(const std::string& broker,
                                 const std::string& queue, int64_t jobs,
                                 int producers, int batch,
                                 int64_t* first_submit_us) {
  const std::string payload(absl::GetFlag(FLAGS_payload_bytes), 'x');
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::unique_ptr<Producer>> all;
  for (int p = 0; p < producers; ++p) {
    all.push_back(std::make_unique<Producer>(broker, p, queue, payload, jobs,
                                             batch, &next, &failed));
  }
  *first_submit_us = NowUs();
  for (auto& producer : all) producer->Start();
  for (auto& producer : all) producer->Wait();
  if (failed) std::exit(1);
  std::vector<std::string> ids;
  for (auto& producer : all) {
    ids.insert(ids.end(), producer->ids().begin(), producer->ids().end());
  }
  return ids;
}

std::string FreshQueue() {
  std::string queue = absl::GetFlag(FLAGS_queue);
  if (queue.empty())
    queue = absl::StrCat("bench-", getpid(), "-", NowUs() % 1000000);
  return queue;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "ferry-bench: FAILED: %s\n", message.c_str());
  return 1;
}

int64_t Percentile(std::vector<int64_t>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t index = static_cast<size_t>(p * (values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

// Reads "Threads:" and "VmRSS:" of a process from /proc.
std::pair<int64_t, int64_t> ThreadsAndRssKb(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  int64_t threads = -1, rss = -1;
  while (std::getline(in, line)) {
    std::vector<std::string> parts =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (parts.size() < 2) continue;
    if (parts[0] == "Threads:") (void)absl::SimpleAtoi(parts[1], &threads);
    if (parts[0] == "VmRSS:") (void)absl::SimpleAtoi(parts[1], &rss);
  }
  return {threads, rss};
}

// Open loop at `rate` for `jobs` jobs from one producer; latencies in us.
int RunLatency(const std::string& broker, const std::string& queue,
               int64_t jobs, double rate, Ledger& ledger, Result* result) {
  auto stub = v1::Jobs::NewStub(NewChannel(broker, 0));
  std::string payload(absl::GetFlag(FLAGS_payload_bytes), 'x');
  // Open loop: each job is sent at its time in the schedule whether or not
  // earlier ones were acknowledged (async calls), so a slow ack shows up as
  // latency instead of lowering the rate.
  struct Call {
    grpc::ClientContext ctx;
    v1::SubmitRequest request;
    v1::SubmitResponse response;
    int64_t sent = 0;
    int64_t acked = 0;
    grpc::Status status;
  };
  std::vector<std::unique_ptr<Call>> calls(jobs);
  absl::Mutex mu;
  int64_t done = 0;
  const int64_t interval_us = static_cast<int64_t>(1e6 / rate);
  const int64_t start = NowUs();
  for (int64_t i = 0; i < jobs; ++i) {
    const int64_t due = start + i * interval_us;
    while (NowUs() < due) {
      std::this_thread::sleep_for(
          std::chrono::microseconds(std::min<int64_t>(due - NowUs(), 100)));
    }
    auto& call = calls[i];
    call = std::make_unique<Call>();
    *call->request.mutable_job() = Spec(queue, payload);
    call->ctx.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(30));
    call->sent = NowUs();
    Call* raw = call.get();
    stub->async()->Submit(&raw->ctx, &raw->request, &raw->response,
                          [raw, &mu, &done](grpc::Status status) {
                            raw->acked = NowUs();
                            raw->status = std::move(status);
                            absl::MutexLock lock(&mu);
                            ++done;
                          });
  }
  {
    absl::MutexLock lock(&mu);
    auto all = [&done, jobs]()
                   ABSL_NO_THREAD_SAFETY_ANALYSIS { return done == jobs; };
    if (!mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(60))) {
      return Fail("submits were not acknowledged");
    }
  }
  std::vector<std::string> ids;
  std::vector<int64_t> sent, acked;
  for (auto& call : calls) {
    if (!call->status.ok()) return Fail(call->status.error_message());
    ids.push_back(call->response.job().id());
    sent.push_back(call->sent);
    acked.push_back(call->acked);
  }
  if (!ledger.WaitAcked(jobs, absl::GetFlag(FLAGS_timeout))) {
    return Fail("timed out waiting for results");
  }
  if (std::string error = ledger.Check(ids); !error.empty()) return Fail(error);
  std::vector<int64_t> from_ack, from_send, submit;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t received = ledger.ReceivedAt(ids[i]);
    from_ack.push_back(std::max<int64_t>(0, received - acked[i]));
    from_send.push_back(received - sent[i]);
    submit.push_back(acked[i] - sent[i]);
  }
  result->jobs = jobs;
  result->seconds = (NowUs() - start) / 1e6;
  result->jobs_per_s = jobs / result->seconds;
  result->extra = {{"p50_us", Percentile(from_ack, 0.5)},
                   {"p99_us", Percentile(from_ack, 0.99)},
                   {"max_us", Percentile(from_ack, 1.0)},
                   {"sent_p50_us", Percentile(from_send, 0.5)},
                   {"sent_p99_us", Percentile(from_send, 0.99)},
                   {"sent_max_us", Percentile(from_send, 1.0)},
                   {"submit_p50_us", Percentile(submit, 0.5)},
                   {"submit_p99_us", Percentile(submit, 0.99)},
                   {"submit_max_us", Percentile(submit, 1.0)}};
  return 0;
}

int Run() {
  const std::string broker = absl::GetFlag(FLAGS_broker);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int producers = absl::GetFlag(FLAGS_producers);
  const int workers = absl::GetFlag(FLAGS_workers);
  const int slots = absl::GetFlag(FLAGS_slots);
  const int64_t jobs = absl::GetFlag(FLAGS_jobs);
  const int batch = std::max(1, absl::GetFlag(FLAGS_batch));
  const bool json = absl::GetFlag(FLAGS_json);
  if (producers < 1 || workers < 0 || jobs < 1 || slots < 1) {
    return Fail("--producers, --jobs and --slots must be >= 1");
  }
  const std::string queue = FreshQueue();
  Result result;
  result.mode = mode;
  Ledger ledger;

  if (mode == "submit") {
    int64_t first = 0;
    std::vector<std::string> ids =
        Produce(broker, queue, jobs, producers, batch, &first);
    result.jobs = static_cast<int64_t>(ids.size());
    result.seconds = (NowUs() - first) / 1e6;
  } else if (mode == "e2e") {
    if (workers < 1) return Fail("e2e needs --workers >= 1");
    WorkerPool pool(broker, queue, workers, slots, &ledger);
    int64_t first = 0;
    std::vector<std::string> ids =
        Produce(broker, queue, jobs, producers, batch, &first);
    if (!ledger.WaitAcked(jobs, absl::GetFlag(FLAGS_timeout))) {
      return Fail("timed out waiting for results");
    }
    if (std::string error = ledger.Check(ids); !error.empty())
      return Fail(error);
    result.jobs = jobs;
    result.seconds = (ledger.last_ack_us() - first) / 1e6;
  } else if (mode == "drain") {
    int64_t first = 0;
    std::vector<std::string> ids =
        Produce(broker, queue, jobs, producers, std::max(batch, 500), &first);
    const int64_t start = NowUs();
    WorkerPool pool(broker, queue, workers, slots, &ledger);
    if (!ledger.WaitAcked(jobs, absl::GetFlag(FLAGS_timeout))) {
      return Fail("timed out waiting for results");
    }
    if (std::string error = ledger.Check(ids); !error.empty())
      return Fail(error);
    result.jobs = jobs;
    result.seconds = (ledger.last_ack_us() - start) / 1e6;
  } else if (mode == "backlog") {
    const int64_t backlog = absl::GetFlag(FLAGS_backlog);
    if (backlog < jobs) return Fail("--backlog must be at least --jobs");
    std::vector<std::string> ids;
    if (absl::GetFlag(FLAGS_fill)) {
      int64_t first = 0;
      ids = Produce(broker, queue, backlog, producers, std::max(batch, 1000),
                    &first);
    } else if (absl::GetFlag(FLAGS_queue).empty()) {
      return Fail("--fill=false needs the --queue that holds the backlog");
    }
    {
      WorkerPool pool(broker, queue, workers, slots, &ledger);
      if (!ledger.WaitAcked(jobs, absl::GetFlag(FLAGS_timeout))) {
        return Fail("timed out waiting for results");
      }
      // From the first job received, so connecting is not counted.
      result.seconds = (ledger.last_ack_us() - ledger.first_receive_us()) / 1e6;
    }  // workers stop: they withdraw their credits and finish what they have
    if (!ids.empty()) {
      if (std::string error = ledger.CheckSubset(ids); !error.empty()) {
        return Fail(error);
      }
    }
    result.jobs = jobs;
    result.extra.push_back({"backlog", backlog});
    result.extra.push_back({"received", ledger.received()});
  } else if (mode == "latency") {
    WorkerPool pool(broker, queue, std::max(workers, 1), slots, &ledger);
    // Let the workers connect and grant credit before the clock starts.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (int rc = RunLatency(broker, queue, jobs, absl::GetFlag(FLAGS_rate),
                            ledger, &result)) {
      return rc;
    }
  } else if (mode == "streams") {
    // Idle streams on another queue: they hold credit but never get a job.
    const int idle = absl::GetFlag(FLAGS_idle_streams);
    const int pid = absl::GetFlag(FLAGS_ferryd_pid);
    std::pair<int64_t, int64_t> before =
        pid ? ThreadsAndRssKb(pid) : std::make_pair(-1L, -1L);
    std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
    std::vector<std::unique_ptr<
        grpc::ClientReaderWriter<v1::WorkerMessage, v1::ServerMessage>>>
        streams;
    std::vector<std::unique_ptr<v1::Workers::Stub>> stubs;
    for (int i = 0; i < 8; ++i)
      stubs.push_back(v1::Workers::NewStub(NewChannel(broker, 2000 + i)));
    for (int i = 0; i < idle; ++i) {
      auto ctx = std::make_unique<grpc::ClientContext>();
      auto stream = stubs[i % stubs.size()]->Connect(ctx.get());
      v1::WorkerMessage hello;
      hello.mutable_hello()->set_worker_id(absl::StrCat("idle-", i));
      hello.mutable_hello()->add_queues(queue + "-idle");
      hello.mutable_hello()->set_initial_credits(4);
      if (!stream->Write(hello)) return Fail("cannot open idle stream");
      v1::ServerMessage welcome;
      if (!stream->Read(&welcome)) return Fail("idle stream got no Welcome");
      contexts.push_back(std::move(ctx));
      streams.push_back(std::move(stream));
    }
    std::pair<int64_t, int64_t> after =
        pid ? ThreadsAndRssKb(pid) : std::make_pair(-1L, -1L);
    WorkerPool pool(broker, queue, std::max(workers, 1), slots, &ledger);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    if (int rc = RunLatency(broker, queue, jobs, absl::GetFlag(FLAGS_rate),
                            ledger, &result)) {
      return rc;
    }
    result.extra.push_back({"idle_streams", idle});
    result.extra.push_back({"threads_before", before.first});
    result.extra.push_back({"threads_after", after.first});
    result.extra.push_back({"rss_kb_before", before.second});
    result.extra.push_back({"rss_kb_after", after.second});
    for (auto& ctx : contexts) ctx->TryCancel();
    for (auto& stream : streams) (void)stream->Finish();
  } else {
    return Fail(absl::StrCat("unknown --mode ", mode));
  }
  if (result.seconds > 0 && result.jobs_per_s == 0) {
    result.jobs_per_s = result.jobs / result.seconds;
  }
  Print(result, json);
  return 0;
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) {
  ferry::SetUsage(
      "Load generator for ferryd (see docs/benchmarks.md): P producer\n"
      "connections and W worker connections (the C++ worker SDK, no-op\n"
      "handlers) against a running ferryd; every job is checked to be\n"
      "received exactly once.\n"
      "  ferry-bench --broker=HOST:PORT --mode=MODE --producers=P --workers=W\n"
      "              --jobs=N [--batch=K] [--rate=R] [--json]\n"
      "Modes: e2e, submit, drain, latency, backlog, streams.",
      __FILE__);
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<ferry::ConnectOptions> resolved =
      ferry::ConnectOptionsFromFlags();
  if (!resolved.ok()) {
    std::fprintf(stderr, "ferry-bench: %s\n",
                 std::string(resolved.status().message()).c_str());
    return 2;
  }
  ferry::connect_options = *std::move(resolved);
  // Debian builds Abseil with lock-order (deadlock) detection on; it costs
  // a graph update on every lock. Tests keep it; production does not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  spdlog::set_level(spdlog::level::warn);
  return ferry::Run();
}
