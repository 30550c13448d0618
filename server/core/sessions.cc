#include "server/core/sessions.h"

#include <algorithm>
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
  StreamSession& added = *session;
  sessions_[handle] = std::move(session);
  dispatcher_->Register(&added);
  return added;
}

StreamSession* SessionTable::Find(uint64_t handle) {
  auto it = sessions_.find(handle);
  return it == sessions_.end() ? nullptr : it->second.get();
}

void SessionTable::Remove(uint64_t handle) {
  dispatcher_->Unregister(handle);
  sessions_.erase(handle);
}

std::vector<uint64_t> SessionTable::Handles() const {
  std::vector<uint64_t> handles;
  handles.reserve(sessions_.size());
  for (const auto& [handle, session] : sessions_) handles.push_back(handle);
  return handles;
}

void SessionTable::Send(uint64_t handle, WorkerEvent event, KickList& kicks) {
  StreamSession* session = Find(handle);
  if (session == nullptr) return;
  session->sink->Push(std::move(event));
  kicks.Add(session->sink);
}

std::vector<WorkerSnapshot> SessionTable::Snapshot() const {
  std::vector<WorkerSnapshot> workers;
  workers.reserve(sessions_.size());
  for (const auto& [handle, session] : sessions_) {
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
              return a.connected_at < b.connected_at;
            });
  return workers;
}

}  // namespace ferry
