#include "server/core/sessions.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "server/core/token.h"

namespace ferry {

StreamSession& SessionTable::Add(uint64_t handle, WorkerIdentity identity,
                                 std::shared_ptr<WorkerSink> sink,
                                 absl::Time now) {
  auto session = std::make_unique<StreamSession>();
  session->kind = Taker::Kind::kStream;
  session->handle = handle;
  session->session_id = RandomHex(8);
  session->identity = std::move(identity);
  session->sink = std::move(sink);
  session->connected_at = now;
  session->last_seen = now;
  return Insert(std::move(session));
}

StreamSession* SessionTable::Seen(uint64_t handle, absl::Time now) {
  StreamSession* session = Find(handle);
  if (session != nullptr) session->last_seen = now;
  return session;
}

void SessionTable::Send(uint64_t handle, WorkerEvent event, KickList& kicks) {
  StreamSession* session = Find(handle);
  if (session == nullptr) return;
  session->sink->Push(std::move(event));
  kicks.Add(session->sink);
}

std::vector<WorkerSnapshot> SessionTable::Snapshot() const {
  std::vector<WorkerSnapshot> workers;
  workers.reserve(takers().size());
  for (const auto& [handle, session] : takers()) {
    WorkerSnapshot snapshot;
    snapshot.identity = session->identity;
    snapshot.session_id = session->session_id;
    snapshot.credits = session->credits;
    snapshot.leases = session->leases;
    snapshot.connected_at = session->connected_at;
    snapshot.last_seen = session->last_seen;
    workers.push_back(std::move(snapshot));
  }
  std::sort(workers.begin(), workers.end(),
            [](const WorkerSnapshot& a, const WorkerSnapshot& b) {
              return std::tie(a.connected_at, a.session_id) <
                     std::tie(b.connected_at, b.session_id);
            });
  return workers;
}

}  // namespace ferry
