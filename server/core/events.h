#ifndef FERRY_SERVER_CORE_EVENTS_H_
#define FERRY_SERVER_CORE_EVENTS_H_

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/time/time.h"
#include "server/core/sink.h"
#include "storage/store.h"

namespace ferry {

// The broker core's outbox: what it tells a worker session and a watcher,
// as plain values; and what workers report to it. server/ converts between
// these and the wire messages (ferry.v1.ServerMessage, ferry.v1.Job,
// ferry.v1.Heartbeat, ...); the core knows no protobuf.

// The first event of a session.
struct WelcomeEvent {
  std::string session_id;
  absl::Duration heartbeat_interval;
  absl::Duration lease_ttl;
  // Largest output a Result may carry (the broker's payload limit).
  int64_t max_output_bytes = 0;
};

// A job leased to the session (or to a unary Lease call): the job with its
// payload, the lease token that proves the lease, and its deadline.
struct Assignment {
  JobRecord job;
  std::string lease_token;
  absl::Time lease_deadline;
};

// Stop working on the job held under `lease_token`: it was cancelled.
struct CancelEvent {
  std::string lease_token;
  int64_t job_id = 0;
  std::string reason;
};

// The lease is no longer the worker's (expired, cancelled, unknown, held by
// another worker). `job_id` is 0 when the broker does not know it.
struct LeaseLostEvent {
  std::string lease_token;
  int64_t job_id = 0;
  std::string reason;
};

// The result sent under `lease_token` is stored; the job is now `state`.
struct ResultAckedEvent {
  std::string lease_token;
  int64_t job_id = 0;
  JobState state = JobState::kSucceeded;
};

// Take no more work: the broker is shutting down.
struct DrainEvent {
  std::string reason;
};

using WorkerEvent = std::variant<WelcomeEvent, Assignment, CancelEvent,
                                 LeaseLostEvent, ResultAckedEvent, DrainEvent>;

// Where the core sends a worker session's events, and a watcher's job
// states (each a JobRecord without payload and result).
using WorkerSink = Sink<WorkerEvent>;
using JobSink = Sink<JobRecord>;

// ---- what workers report ----

// A lease a reconnecting worker still holds (its Hello).
struct HeldLease {
  int64_t job_id = 0;
  std::string token;
};

// How a worker ended an attempt.
struct Outcome {
  bool success = false;
  std::string output;  // success
  std::string error;   // failure
  bool retryable = true;
};

// What a worker reports of a running job.
struct Progress {
  uint32_t percent = 0;  // clamped to 100
  std::string message;   // cut at 1 KiB
};

// A stream heartbeat: leases to extend, some with progress.
struct HeartbeatReport {
  std::vector<std::string> lease_tokens;
  struct WithProgress {
    std::string lease_token;
    Progress progress;
  };
  std::vector<WithProgress> progress;
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_EVENTS_H_
