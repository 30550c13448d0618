// grpc-floor: a Jobs.Submit server that does nothing but answer, to measure
// what gRPC itself costs per unary call on this machine (the floor under
// ferryd's Submit). Drive it with ferry-bench --mode=submit; on SIGTERM or
// SIGINT it prints the calls it served and its CPU time per call.
//
//   grpc-floor --api=callback        callback API, Finish in the handler
//   grpc-floor --api=callback_hop    callback API, Finish from a thread of
//                                    its own (one hand-off, as ferryd's
//                                    completion thread does)
//   grpc-floor --api=async --threads=N   completion-queue API, N threads

#include <signal.h>
#include <sys/resource.h>

#include <atomic>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/flags_usage.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, api, "callback", "callback, callback_hop or async.");
ABSL_FLAG(int, threads, 1, "async: completion-queue threads.");
ABSL_FLAG(std::string, listen, "127.0.0.1:0", "Address; port 0 picks one.");

namespace ferry {
namespace {

std::atomic<int64_t> calls{0};

void Answer(v1::SubmitResponse* response) {
  const int64_t id = ++calls;
  response->mutable_job()->set_id(absl::StrCat(id));
  response->mutable_job()->set_state(v1::JOB_STATE_QUEUED);
}

// Finishes reactors from one thread of its own, in order.
class Finisher {
 public:
  Finisher() : thread_([this] { Loop(); }) { thread_.detach(); }
  void Push(grpc::ServerUnaryReactor* reactor) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(reactor);
  }

 private:
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty();
  }
  void Loop() {
    while (true) {
      std::deque<grpc::ServerUnaryReactor*> batch;
      {
        absl::MutexLock lock(&mu_, absl::Condition(this, &Finisher::HasWork));
        batch.swap(queue_);
      }
      for (grpc::ServerUnaryReactor* reactor : batch) {
        reactor->Finish(grpc::Status::OK);
      }
    }
  }
  absl::Mutex mu_;
  std::deque<grpc::ServerUnaryReactor*> queue_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

class CallbackJobs final : public v1::Jobs::CallbackService {
 public:
  explicit CallbackJobs(Finisher* finisher) : finisher_(finisher) {}
  grpc::ServerUnaryReactor* Submit(grpc::CallbackServerContext* ctx,
                                   const v1::SubmitRequest*,
                                   v1::SubmitResponse* response) override {
    Answer(response);
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    if (finisher_ != nullptr) {
      finisher_->Push(reactor);
    } else {
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }

 private:
  Finisher* const finisher_;
};

// One Submit on the completion-queue API: requested, answered, done.
class AsyncCall {
 public:
  AsyncCall(v1::Jobs::AsyncService* service, grpc::ServerCompletionQueue* cq)
      : service_(service), cq_(cq), responder_(&ctx_) {
    service_->RequestSubmit(&ctx_, &request_, &responder_, cq_, cq_, this);
  }
  void Proceed(bool ok) {
    if (answered_ || !ok) {
      delete this;
      return;
    }
    new AsyncCall(service_, cq_);
    Answer(&response_);
    answered_ = true;
    responder_.Finish(response_, grpc::Status::OK, this);
  }

 private:
  v1::Jobs::AsyncService* const service_;
  grpc::ServerCompletionQueue* const cq_;
  grpc::ServerContext ctx_;
  v1::SubmitRequest request_;
  v1::SubmitResponse response_;
  grpc::ServerAsyncResponseWriter<v1::SubmitResponse> responder_;
  bool answered_ = false;
};

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

int Run(int argc, char** argv) {
  SetUsage(
      "A Jobs.Submit server that only answers: gRPC's own cost per unary\n"
      "call. Drive it with ferry-bench --mode=submit; stop it with SIGTERM\n"
      "or SIGINT to get calls served and CPU per call.\n"
      "  grpc-floor [--api=callback|callback_hop|async] [--threads=N]",
      __FILE__);
  absl::ParseCommandLine(argc, argv);
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "callback" && api != "callback_hop" && api != "async") {
    std::fprintf(stderr,
                 "grpc-floor: --api must be callback, callback_hop "
                 "or async\n");
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<Finisher> finisher;
  if (api == "callback_hop") finisher = std::make_unique<Finisher>();
  CallbackJobs callback_service(finisher.get());
  v1::Jobs::AsyncService async_service;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen),
                           grpc::InsecureServerCredentials(), &port);
  if (api == "async") {
    builder.RegisterService(&async_service);
    for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_threads)); ++i) {
      queues.push_back(builder.AddCompletionQueue());
    }
  } else {
    builder.RegisterService(&callback_service);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "grpc-floor: cannot listen on %s\n",
                 absl::GetFlag(FLAGS_listen).c_str());
    return 1;
  }
  std::vector<std::thread> threads;
  for (auto& cq : queues) {
    for (int i = 0; i < 16; ++i) new AsyncCall(&async_service, cq.get());
    threads.emplace_back([cq = cq.get()] {
      void* tag = nullptr;
      bool ok = false;
      while (cq->Next(&tag, &ok)) static_cast<AsyncCall*>(tag)->Proceed(ok);
    });
  }
  std::fprintf(stderr, "listening address=127.0.0.1:%d api=%s\n", port,
               api.c_str());
  const double cpu_start = CpuSeconds();
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  const double cpu = CpuSeconds() - cpu_start;
  const int64_t served = calls.load();
  std::printf("api=%s calls=%lld cpu_s=%.3f cpu_us_per_call=%.1f\n",
              api.c_str(), static_cast<long long>(served), cpu,
              served > 0 ? cpu * 1e6 / served : 0.0);
  std::fflush(stdout);
  // Exits without tearing the server down: the figure is what matters.
  std::_Exit(0);
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) { return ferry::Run(argc, argv); }
