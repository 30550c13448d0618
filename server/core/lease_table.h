#ifndef FERRY_SERVER_CORE_LEASE_TABLE_H_
#define FERRY_SERVER_CORE_LEASE_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "storage/store.h"

namespace ferry {

enum class LeasePhase {
  kGranting,  // lease write queued; the worker does not know it yet
  kActive,    // the worker holds it
  kEnding,    // a result, an expiry or a put-back is being written
};

struct LeaseState {
  int64_t job_id = 0;  // 0 while a direct-at-submit insert is pending
  std::string queue;
  uint64_t session = 0;  // 0: no live session (disconnected or unary)
  std::string worker_id;
  LeasePhase phase = LeasePhase::kGranting;
  int32_t attempt = 0;
  int32_t max_attempts = 1;
  absl::Duration ttl;
  absl::Duration initial_backoff;
  absl::Duration max_backoff;
  // Set once active; the table orders active leases by it.
  absl::Time deadline;
  // The session's credit_epoch when the lease took its credit.
  uint64_t credit_epoch = 0;
};

// The leases the broker knows, by token, with the deadlines of the active
// ones; the results recently stored, so that a worker resending one after a
// reconnect is acknowledged; and the results being stored right now, with
// the session to acknowledge. Knows no store, no clock, no session.
//
// Not thread-safe: the broker calls it under its lock. A reference or
// pointer to a lease stays valid until the next Add or Drop.
class LeaseTable {
 public:
  // A result stored under some token.
  struct Recent {
    int64_t job_id = 0;
    JobState state = JobState::kSucceeded;
  };

  // How many stored results are remembered.
  static constexpr size_t kRecentResults = 4096;

  // Adds a lease (granting, no deadline). REQUIRES: `token` is new.
  LeaseState& Add(const std::string& token);
  // The lease `token`, or nullptr.
  LeaseState* Find(const std::string& token);
  // Forgets the lease and its deadline. Returns it (nullopt if unknown).
  std::optional<LeaseState> Drop(const std::string& token);

  // Makes the lease active until `deadline`.
  void SetDeadline(const std::string& token, LeaseState& lease,
                   absl::Time deadline);
  // The lease is no longer active (it is ending): it has no deadline.
  void ClearDeadline(const std::string& token, LeaseState& lease);
  // The earliest deadline (InfiniteFuture if none).
  absl::Time NextDeadline() const;
  // The token of an active lease whose deadline is at or before `now`.
  std::optional<std::string> FirstExpired(absl::Time now) const;

  // Detaches the leases of `session` (those it holds, not those still
  // being granted) from it. Returns how many.
  int Orphan(uint64_t session);

  // Remembers that a result under `token` was stored for `job`.
  void RememberResult(const std::string& token, int64_t job_id, JobState state);
  const Recent* RecentResult(const std::string& token) const;

  // Results being stored: which session gets the acknowledgement.
  void SetAckTarget(const std::string& token, uint64_t session) {
    acks_[token] = session;
  }
  bool AckPending(const std::string& token) const {
    return acks_.contains(token);
  }
  // Moves a pending acknowledgement to `session`. False if none pends.
  bool RetargetAck(const std::string& token, uint64_t session);
  // The session to acknowledge (0 if none) and forgets it.
  uint64_t TakeAckTarget(const std::string& token);

 private:
  absl::flat_hash_map<std::string, LeaseState> leases_;
  // Active leases by deadline.
  absl::btree_set<std::pair<absl::Time, std::string>> deadlines_;
  absl::flat_hash_map<std::string, Recent> recent_;
  std::deque<std::string> recent_order_;
  absl::flat_hash_map<std::string, uint64_t> acks_;
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_LEASE_TABLE_H_
