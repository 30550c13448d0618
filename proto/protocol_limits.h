#ifndef FERRY_PROTO_PROTOCOL_LIMITS_H_
#define FERRY_PROTO_PROTOCOL_LIMITS_H_

// Every limit of the protocol, in one place: the broker enforces them, the
// SDKs and the CLI check or apply them early so a user hears about a bad
// value before any call. docs/protocol.md lists them under "Limits".
// Plain constants (Abseil only): the broker core may use them too.
//
// Limits an operator sets (--max_payload_bytes, credits per session, ...)
// are ferryd flags, not here.

#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"

namespace ferry {

// ---- names and labels (queues, kinds, worker ids, label keys) ----

inline constexpr size_t kMaxNameLength = 128;
inline constexpr size_t kMaxLabelKeyLength = 63;
inline constexpr size_t kMaxLabelValueLength = 256;
inline constexpr int kMaxLabels = 32;

// ---- a JobSpec ----

inline constexpr size_t kMaxIdempotencyKeyLength = 256;
inline constexpr size_t kMaxContentTypeLength = 128;
inline constexpr int32_t kMaxPriority = 1000;  // and -1000 the lowest
inline constexpr int32_t kMaxAttempts = 1000;
inline constexpr absl::Duration kMinLeaseTtl = absl::Seconds(1);
inline constexpr absl::Duration kMaxLeaseTtl = absl::Hours(24);
// The longest delay, and the longest retry backoff.
inline constexpr absl::Duration kMaxDelay = absl::Hours(24 * 366);
// Largest payload ferryd can be configured to take (--max_payload_bytes).
inline constexpr int64_t kMaxPayloadLimit = 256 << 20;

// ---- the Jobs service ----

inline constexpr int kMaxBatchSize = 1000;  // jobs per SubmitBatch
inline constexpr uint32_t kDefaultPageSize = 100;
inline constexpr uint32_t kMaxPageSize = 1000;
// A List page stops growing past this many bytes of jobs.
inline constexpr size_t kMaxPageBytes = 4 << 20;
inline constexpr absl::Duration kDefaultWait = absl::Seconds(30);
inline constexpr absl::Duration kMaxWait = absl::Hours(1);  // one Wait call
inline constexpr size_t kMaxCancelReasonLength = 1024;

// ---- the Workers service ----

// Queues one worker (a Connect stream's Hello, a unary Lease) takes from.
inline constexpr int kMaxWorkerQueues = 64;
// Leases a reconnecting worker may name in its Hello, and tokens one
// Heartbeat may list.
inline constexpr int kMaxHeldLeases = 100000;
// Messages the broker queues for one worker stream. A worker that stops
// reading past it has its session ended (and its stream closed
// RESOURCE_EXHAUSTED): room for a reconnect's LeaseLosts plus a full
// credit window, no more.
inline constexpr size_t kMaxQueuedWorkerMessages = 2 * kMaxHeldLeases;
// Payload bytes of the assignments waiting for one worker stream, at
// most; past it the session is ended the same way. A worker that holds
// many credits and does not read would otherwise pin a payload per credit.
inline constexpr size_t kMaxQueuedWorkerBytes = 64 << 20;
// Hello fields kept, in bytes; longer ones are cut.
inline constexpr size_t kMaxHostnameLength = 255;
inline constexpr size_t kMaxVersionLength = 64;
// Jobs one unary Lease call may take, and how long it may wait.
inline constexpr uint32_t kMaxLeaseJobs = 100;
inline constexpr absl::Duration kMaxLeaseWait = absl::Seconds(60);
// A failure message is cut to this many bytes, a progress message to this.
inline constexpr size_t kMaxErrorMessageLength = 4096;
inline constexpr size_t kMaxProgressMessageLength = 1024;
// Messages bundled in one ServerMessage.batch / WorkerMessage.batch, and
// the size past which a batch takes no more: well under a peer's default
// 4 MiB receive limit, however large the payloads.
inline constexpr int kMaxBatchMessages = 256;
inline constexpr size_t kMaxBatchBytes = 256 << 10;

}  // namespace ferry

#endif  // FERRY_PROTO_PROTOCOL_LIMITS_H_
