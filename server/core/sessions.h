#ifndef FERRY_SERVER_CORE_SESSIONS_H_
#define FERRY_SERVER_CORE_SESSIONS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/core/dispatcher.h"
#include "server/core/events.h"
#include "server/core/taker_table.h"
#include "storage/store.h"

namespace ferry {

// A connected worker stream (Workers.Connect).
struct StreamSession : Taker {
  std::string session_id;
  std::shared_ptr<WorkerSink> sink;
  absl::Time connected_at;
  absl::Time last_seen;
};

// A connected worker, for ListWorkers.
struct WorkerSnapshot {
  WorkerIdentity identity;
  std::string session_id;
  int64_t credits = 0;
  int64_t leases = 0;
  absl::Time connected_at;
  absl::Time last_seen;
};

// The worker streams that are open, each registered with the dispatcher
// while it lives. Sends a session its events.
//
// Not thread-safe: the broker calls it under its lock.
class SessionTable : public TakerTable<StreamSession> {
 public:
  using TakerTable::TakerTable;

  // Opens a session under `handle` (new) with a random session id.
  StreamSession& Add(uint64_t handle, WorkerIdentity identity,
                     std::shared_ptr<WorkerSink> sink, absl::Time now);
  // The session `handle`, marked as heard from at `now`; nullptr if it is
  // not open.
  StreamSession* Seen(uint64_t handle, absl::Time now);

  // Queues `event` for the session; nothing if it is gone.
  void Send(uint64_t handle, WorkerEvent event, KickList& kicks);

  // Every session, oldest connection first (then by session id).
  std::vector<WorkerSnapshot> Snapshot() const;
};

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_SESSIONS_H_
