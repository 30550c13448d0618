#ifndef FERRY_CLIENT_CLIENT_H_
#define FERRY_CLIENT_CLIENT_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/broker_address.h"
#include "client/connect.h"
#include "ferry/v1/jobs.grpc.pb.h"
#include "grpcpp/channel.h"

namespace ferry {

// What to submit. Unset optional fields take the broker's defaults.
struct SubmitOptions {
  std::string queue;
  std::string kind;
  std::string payload;
  std::string content_type;
  std::map<std::string, std::string> labels;
  int32_t priority = 0;
  // At most one of delay and run_at.
  std::optional<absl::Duration> delay;
  std::optional<absl::Time> run_at;
  uint32_t max_attempts = 0;  // 0: broker default
  std::optional<absl::Duration> initial_backoff;
  std::optional<absl::Duration> max_backoff;
  std::optional<absl::Duration> lease_ttl;
  std::optional<absl::Duration> timeout;  // execution timeout for the worker
  std::string idempotency_key;

  // The request message for these options.
  v1::JobSpec ToSpec() const;
};

struct SubmitResult {
  v1::Job job;          // without the payload
  bool created = true;  // false: the idempotency key matched this job
};

struct ClientOptions {
  // host:port of ferryd.
  std::string broker = kDefaultBrokerAddress;
  // Deadline of every call (Wait adds its own timeout to it).
  absl::Duration timeout = absl::Seconds(10);
  // Use this channel instead of dialing `broker` (tests, shared channels);
  // `connect` is then not used.
  std::shared_ptr<grpc::Channel> channel;
  // TLS and the access token (client/connect.h). If they are wrong (a file
  // that cannot be read, a certificate that expired), every call returns
  // INVALID_ARGUMENT saying so; check them first with CheckConnectOptions
  // to fail earlier. Last, so that ClientOptions{broker, timeout, channel}
  // still reads as before.
  ConnectOptions connect = {};
};

// A client of ferryd's Jobs service. Thread-safe; calls are synchronous and
// each has the deadline from ClientOptions::timeout.
//
// Errors carry the broker's status code and message. A broker that cannot be
// reached gives UNAVAILABLE (or DEADLINE_EXCEEDED) with its address in the
// message.
class Client {
 public:
  explicit Client(ClientOptions options);

  absl::StatusOr<SubmitResult> Submit(const SubmitOptions& options);
  // All or nothing: one invalid spec fails the whole batch.
  absl::StatusOr<std::vector<SubmitResult>> SubmitBatch(
      const std::vector<SubmitOptions>& jobs);
  absl::StatusOr<v1::Job> Get(absl::string_view job_id,
                              v1::JobView view = v1::JOB_VIEW_FULL);
  // One page; pass response.next_page_token() back for the next.
  absl::StatusOr<v1::ListResponse> List(const v1::ListRequest& request);
  // Calls `on_update` with the job now and after every change until it is
  // terminal (returns OK) or `on_update` returns false (returns OK). No
  // deadline unless `timeout` is given.
  absl::Status Watch(absl::string_view job_id,
                     const std::function<bool(const v1::Job&)>& on_update,
                     std::optional<absl::Duration> timeout = std::nullopt);
  // Returns the job once terminal, or as it is when `timeout` passes (check
  // the state).
  absl::StatusOr<v1::WaitResponse> Wait(absl::string_view job_id,
                                        absl::Duration timeout);
  absl::StatusOr<v1::Job> Cancel(absl::string_view job_id,
                                 absl::string_view reason = "");
  absl::StatusOr<v1::Job> Retry(absl::string_view job_id);
  // Every queue, or just `queue`.
  absl::StatusOr<std::vector<v1::QueueInfo>> QueueStats(
      absl::string_view queue = "");
  absl::Status PauseQueue(absl::string_view queue);
  absl::Status ResumeQueue(absl::string_view queue);
  // Returns how many jobs were deleted.
  absl::StatusOr<uint64_t> PurgeQueue(absl::string_view queue,
                                      v1::JobState state);
  // Every connected worker, oldest connection first (it follows the
  // broker's pages).
  absl::StatusOr<std::vector<v1::WorkerInfo>> ListWorkers();

  const std::string& broker() const { return broker_; }

 private:
  std::unique_ptr<grpc::ClientContext> Context(
      absl::Duration extra = absl::ZeroDuration()) const;
  absl::Status Error(const grpc::Status& status) const;
  // Every page of a paged listing (client.cc).
  template <typename Response, typename Request, typename Call, typename Take>
  absl::Status AllPages(Request request, Call call, Take take) const;

  const std::string broker_;
  const absl::Duration timeout_;
  absl::Status setup_;  // why the channel could not be made; every call's
                        // error then
  std::unique_ptr<v1::Jobs::Stub> stub_;
};

}  // namespace ferry

#endif  // FERRY_CLIENT_CLIENT_H_
