#include "server/core/watchers.h"

#include <algorithm>
#include <utility>

namespace ferry {

void Watchers::Add(uint64_t handle, int64_t job_id,
                   std::shared_ptr<JobSink> sink, absl::Time deadline) {
  Watcher& watcher = watchers_[handle];
  watcher.job_id = job_id;
  watcher.sink = std::move(sink);
  watcher.deadline = deadline;
  of_job_[job_id].push_back(handle);
}

bool Watchers::Prime(uint64_t handle, const JobRecord& job, KickList& kicks) {
  auto it = watchers_.find(handle);
  if (it == watchers_.end()) return false;
  Watcher& watcher = it->second;
  watcher.primed = true;
  watcher.last = job;
  watcher.sink->Push(job);
  kicks.Add(watcher.sink);
  if (IsTerminal(job.state)) {
    Close(handle, absl::OkStatus(), kicks);
    return false;
  }
  if (watcher.held.has_value()) {
    const JobRecord held = *std::move(watcher.held);
    watcher.held.reset();
    Deliver(handle, watcher, held, kicks);
  }
  return watchers_.contains(handle);
}

void Watchers::Remove(uint64_t handle) {
  auto it = watchers_.find(handle);
  if (it == watchers_.end()) return;
  auto of_job = of_job_.find(it->second.job_id);
  if (of_job != of_job_.end()) {
    std::vector<uint64_t>& handles = of_job->second;
    handles.erase(std::remove(handles.begin(), handles.end(), handle),
                  handles.end());
    if (handles.empty()) of_job_.erase(of_job);
  }
  watchers_.erase(it);
}

void Watchers::Notify(const JobRecord& job_in, KickList& kicks) {
  auto of_job = of_job_.find(job_in.id);
  if (of_job == of_job_.end()) return;
  // Watchers keep what they were last sent, and sinks read payload and
  // result afresh when they need them: copies of those (up to
  // --max_payload_bytes each, from a lease's read-back) would only cost
  // memory for every watcher of a running job.
  JobRecord job = job_in;
  job.payload.clear();
  job.payload.shrink_to_fit();
  job.result.clear();
  job.result.shrink_to_fit();
  const std::vector<uint64_t> handles = of_job->second;
  for (uint64_t handle : handles) {
    Watcher& watcher = watchers_[handle];
    if (!watcher.primed) {
      // Changes come in commit order: keep the newest, but never trade a
      // terminal state (the watcher's last) for a later retry's.
      if (!watcher.held.has_value() || !IsTerminal(watcher.held->state)) {
        watcher.held = job;
      }
      continue;
    }
    Deliver(handle, watcher, job, kicks);
  }
}

void Watchers::Deliver(uint64_t handle, Watcher& watcher, const JobRecord& job,
                       KickList& kicks) {
  const JobRecord& last = watcher.last;
  if (last.state == job.state && last.attempt == job.attempt &&
      last.updated_at == job.updated_at &&
      last.progress_percent == job.progress_percent &&
      last.progress_message == job.progress_message) {
    return;  // already seen (read by Watch after this commit)
  }
  // Older than what the watcher has: committed before Watch's read, its
  // callback run after it. Sent, it would take the job back in time.
  // (Every write stamps updated_at with the broker's clock, in the order
  // it is queued; should that clock step back, an update may be skipped,
  // never a terminal state.)
  if (job.updated_at < last.updated_at && !IsTerminal(job.state)) return;
  watcher.last = job;
  watcher.sink->Push(job);
  kicks.Add(watcher.sink);
  if (IsTerminal(job.state)) Close(handle, absl::OkStatus(), kicks);
}

void Watchers::Close(uint64_t handle, const absl::Status& status,
                     KickList& kicks) {
  Watcher& watcher = watchers_[handle];
  watcher.sink->Close(status);
  kicks.Add(watcher.sink);
  Remove(handle);
}

void Watchers::CloseJob(int64_t job_id, const absl::Status& status,
                        KickList& kicks) {
  auto of_job = of_job_.find(job_id);
  if (of_job == of_job_.end()) return;
  const std::vector<uint64_t> handles = of_job->second;
  for (uint64_t handle : handles) Close(handle, status, kicks);
}

void Watchers::CloseAll(const absl::Status& status, KickList& kicks) {
  std::vector<uint64_t> handles;
  for (const auto& [handle, watcher] : watchers_) handles.push_back(handle);
  for (uint64_t handle : handles) Close(handle, status, kicks);
}

void Watchers::ExpireDue(absl::Time now, KickList& kicks) {
  std::vector<uint64_t> expired;
  for (const auto& [handle, watcher] : watchers_) {
    // One not primed yet has not been sent the job: it ends on a later
    // tick, after its first message.
    if (watcher.primed && watcher.deadline <= now) expired.push_back(handle);
  }
  for (uint64_t handle : expired) Close(handle, absl::OkStatus(), kicks);
}

absl::Time Watchers::NextDeadline() const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [handle, watcher] : watchers_) {
    if (watcher.primed) next = std::min(next, watcher.deadline);
  }
  return next;
}

}  // namespace ferry
