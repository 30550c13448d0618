#include "server/broker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/backoff.h"
#include "base/log_format.h"
#include "base/status_macros.h"
#include "server/convert.h"
#include "server/token.h"

namespace ferry {
namespace {

// How many finished leases are remembered, so that a worker resending a
// result after a reconnect gets its acknowledgement instead of LeaseLost.
constexpr size_t kRecentResults = 4096;
constexpr int32_t kMaxProgressMessage = 1024;

// How long a background pass that failed in storage waits to try again.
constexpr absl::Duration kStorageRetry = absl::Seconds(1);

bool LeaseGone(const absl::Status& status) {
  return absl::IsFailedPrecondition(status) || absl::IsNotFound(status);
}

}  // namespace

Broker::Broker(Store* store, const Clock* clock, BrokerOptions options)
    : store_(store), clock_(clock), options_(std::move(options)) {}

Broker::~Broker() = default;

absl::Status Broker::Start() {
  FERRY_ASSIGN_OR_RETURN(LiveJobs live, store_->LoadLiveJobs());
  FERRY_ASSIGN_OR_RETURN(std::vector<std::string> paused,
                         store_->PausedQueues());
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  for (const std::string& name : paused) Queue(name).paused = true;
  for (const JobKey& key : live.queued) AddReady(key);
  for (const JobRecord& job : live.running) {
    LeaseState& lease = leases_[job.lease_token];
    lease.job_id = job.id;
    lease.queue = job.queue;
    lease.worker_id = job.worker_id;
    lease.phase = LeasePhase::kActive;
    lease.attempt = job.attempt;
    lease.max_attempts = job.max_attempts;
    lease.ttl = job.lease_ttl;
    lease.initial_backoff = job.initial_backoff;
    lease.max_backoff = job.max_backoff;
    lease_of_job_[job.id] = job.lease_token;
    // Workers get at least one full TTL from the restart to come back.
    SetDeadline(job.lease_token, lease,
                std::max(job.lease_deadline, now + job.lease_ttl));
  }
  next_scheduled_ = live.next_scheduled.value_or(absl::InfiniteFuture());
  spdlog::info("broker started queued={} running={} paused_queues={}",
               live.queued.size(), live.running.size(), paused.size());
  return absl::OkStatus();
}

// ---------------------------------------------------------------- memory

Broker::QueueState& Broker::Queue(const std::string& name) {
  return queues_[name];
}

void Broker::AddReady(const JobKey& key) {
  Queue(key.queue).ready.insert(KeyOf(key.priority, key.run_at, key.id));
}

void Broker::EraseReady(const std::string& queue, const ReadyKey& key) {
  auto it = queues_.find(queue);
  if (it != queues_.end()) it->second.ready.erase(key);
}

void Broker::NoteScheduled(absl::Time run_at) {
  next_scheduled_ = std::min(next_scheduled_, run_at);
}

void Broker::Applied(const JobRecord& job, KickList& kicks) {
  if (job.state == JobState::kQueued) {
    AddReady(JobKey{job.id, job.queue, job.priority, job.run_at});
    Dispatch(job.queue, kicks);
  } else if (job.state == JobState::kScheduled) {
    NoteScheduled(job.run_at);
  }
  Notify(job, kicks);
}

double Broker::Jitter() { return absl::Uniform<double>(bitgen_, 0.0, 1.0); }

// -------------------------------------------------------------- dispatch

void Broker::MarkHungry(Session& session) {
  if (session.credits <= 0) return;
  for (size_t i = 0; i < session.identity.queues.size(); ++i) {
    if (session.hungry_in[i]) continue;
    Queue(session.identity.queues[i]).hungry.push_back(session.handle);
    session.hungry_in[i] = true;
  }
}

Broker::Session* Broker::PopHungry(const std::string& name, QueueState& queue) {
  while (!queue.hungry.empty()) {
    const uint64_t handle = queue.hungry.front();
    queue.hungry.pop_front();
    auto it = sessions_.find(handle);
    if (it == sessions_.end()) continue;
    Session& session = it->second;
    const auto& names = session.identity.queues;
    const size_t index =
        std::find(names.begin(), names.end(), name) - names.begin();
    if (index < names.size()) session.hungry_in[index] = false;
    if (session.credits <= 0) continue;
    if (session.credits > 1 && index < names.size()) {
      // Round robin: back of the line, still hungry.
      queue.hungry.push_back(handle);
      session.hungry_in[index] = true;
    }
    return &session;
  }
  return nullptr;
}

std::string Broker::Grant(Session& session, const std::string& queue,
                          int64_t job_id) {
  std::string token = RandomHex(16);
  --session.credits;
  ++session.granting;
  ++session.leases;
  LeaseState& lease = leases_[token];
  lease.job_id = job_id;
  lease.queue = queue;
  lease.session = session.handle;
  lease.worker_id = session.identity.worker_id;
  lease.phase = LeasePhase::kGranting;
  lease.credit_epoch = session.credit_epoch;
  if (job_id != 0) lease_of_job_[job_id] = token;
  return token;
}

void Broker::Dispatch(const std::string& name, KickList& kicks) {
  if (draining_) return;
  QueueState& queue = Queue(name);
  if (queue.paused) return;
  absl::Time now = absl::InfinitePast();
  while (!queue.ready.empty()) {
    Session* session = PopHungry(name, queue);
    if (session == nullptr) break;
    if (now == absl::InfinitePast()) now = clock_->Now();
    const ReadyKey key = *queue.ready.begin();
    queue.ready.erase(queue.ready.begin());
    std::string token = Grant(*session, name, key.id);
    LeaseGrant grant{token, session->identity.worker_id, now};
    store_->LeaseJob(key.id, std::move(grant),
                     [this, token, name, key](absl::StatusOr<JobRecord> job) {
                       KickList kicks;
                       absl::MutexLock lock(&mu_);
                       if (!job.ok() && !LeaseGone(job.status())) {
                         // Storage failed: the job is still QUEUED on disk.
                         Queue(name).ready.insert(key);
                       }
                       OnGranted(token, std::move(job), kicks);
                     });
  }
}

void Broker::ReturnCredit(uint64_t handle, uint64_t epoch, KickList& kicks) {
  auto it = sessions_.find(handle);
  if (it == sessions_.end()) return;
  Session& session = it->second;
  // A reset since the grant said how many credits the worker holds now;
  // this one is not among them.
  if (epoch != session.credit_epoch) return;
  session.credits = std::min(session.credits + 1, options_.max_credits);
  if (session.unary) {
    FinishUnaryIfDone(session, kicks);
    if (!sessions_.contains(handle)) return;  // answered
    // Still waiting: back in line for the next job, as a stream would be.
  }
  MarkHungry(session);
  for (const std::string& queue : session.identity.queues) {
    Dispatch(queue, kicks);
  }
}

void Broker::OnGranted(const std::string& token, absl::StatusOr<JobRecord> job,
                       KickList& kicks) {
  auto it = leases_.find(token);
  if (it == leases_.end()) return;
  LeaseState& lease = it->second;
  const uint64_t handle = lease.session;
  auto session_it = sessions_.find(handle);
  Session* session =
      session_it == sessions_.end() ? nullptr : &session_it->second;
  if (session != nullptr) --session->granting;

  if (!job.ok()) {
    if (!LeaseGone(job.status())) {
      spdlog::error("lease write failed job_id={} status=\"{}\"", lease.job_id,
                    job.status().ToString());
    }
    const uint64_t epoch = lease.credit_epoch;
    DropLease(token);
    ReturnCredit(handle, epoch, kicks);
    return;
  }

  lease.job_id = job->id;
  lease_of_job_[job->id] = token;
  lease.attempt = job->attempt;
  lease.max_attempts = job->max_attempts;
  lease.ttl = job->lease_ttl;
  lease.initial_backoff = job->initial_backoff;
  lease.max_backoff = job->max_backoff;
  lease.phase = LeasePhase::kActive;
  SetDeadline(token, lease, job->lease_deadline);
  Notify(*job, kicks);

  if (session == nullptr) {
    // The worker left before the assignment reached it.
    ReleaseUndelivered(token, lease);
    return;
  }

  spdlog::debug("job leased job_id={} queue={} worker_id={} attempt={}",
                job->id, job->queue, lease.worker_id, job->attempt);
  v1::ServerMessage msg;
  v1::Assignment* assignment = msg.mutable_assignment();
  ToProto(*job, /*with_payload=*/true, assignment->mutable_job());
  assignment->set_lease_token(token);
  ToProto(job->lease_deadline, assignment->mutable_lease_deadline());
  if (session->unary) {
    // Unary leases belong to no stream: the token alone identifies them.
    lease.session = 0;
    --session->leases;
    const int64_t bytes = static_cast<int64_t>(assignment->ByteSizeLong());
    if (!session->assignments.empty() &&
        session->assignment_bytes + bytes > options_.max_lease_response_bytes) {
      // The response is full: the next call gets this one.
      ReleaseUndelivered(token, lease);
    } else {
      session->assignment_bytes += bytes;
      session->assignments.push_back(std::move(*assignment));
    }
    FinishUnaryIfDone(*session, kicks);
  } else {
    session->sink->Push(std::move(msg));
    kicks.Add(session->sink);
  }
}

void Broker::ReleaseUndelivered(const std::string& token, LeaseState& lease) {
  lease.phase = LeasePhase::kEnding;
  deadlines_.erase({lease.deadline, token});
  store_->ReleaseLease(
      lease.job_id, token, clock_->Now(),
      [this, token, job_id = lease.job_id](absl::StatusOr<JobRecord> released) {
        KickList kicks;
        absl::MutexLock lock(&mu_);
        if (released.ok() || LeaseGone(released.status())) {
          DropLease(token);
          if (released.ok()) Applied(*released, kicks);
          return;
        }
        spdlog::error(
            "putting back an undelivered lease failed job_id={} status=\"{}\"; "
            "the job stays leased until its lease expires",
            job_id, released.status().ToString());
        KeepLeaseAfterFailedEnd(token);
      });
}

void Broker::KeepLeaseAfterFailedEnd(const std::string& token) {
  auto it = leases_.find(token);
  if (it == leases_.end()) return;
  LeaseState& lease = it->second;
  lease.phase = LeasePhase::kActive;
  SetDeadline(token, lease,
              std::max(lease.deadline, clock_->Now() + lease.ttl));
}

void Broker::FinishUnaryIfDone(Session& session, KickList& kicks) {
  if (!session.unary || session.granting > 0) return;
  const bool done = !session.assignments.empty() || session.credits <= 0 ||
                    draining_ || clock_->Now() >= session.deadline;
  if (!done) return;
  kicks.Defer([done = std::move(session.unary_done),
               assignments = std::move(session.assignments)]() mutable {
    std::move(done)(std::move(assignments));
  });
  RemoveSession(session.handle);
}

// ------------------------------------------------------------------ jobs

void Broker::Submit(std::vector<JobRecord> jobs,
                    ResultCallback<std::vector<CreateResult>> done) {
  absl::MutexLock lock(&mu_);
  // A due job whose queue has a waiting worker is leased in the same
  // transaction that stores it: the submit's commit is also the lease's,
  // and the assignment leaves with the acknowledgement.
  std::vector<std::string> tokens(jobs.size());
  if (!draining_) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      JobRecord& job = jobs[i];
      if (job.state != JobState::kQueued) continue;
      QueueState& queue = Queue(job.queue);
      if (queue.paused || !queue.ready.empty()) continue;
      Session* session = PopHungry(job.queue, queue);
      if (session == nullptr) continue;
      tokens[i] = Grant(*session, job.queue, 0);
      job.state = JobState::kRunning;
      job.attempt = 1;
      job.started_at = job.created_at;
      job.worker_id = session->identity.worker_id;
      job.lease_token = tokens[i];
      job.lease_deadline = job.created_at + job.lease_ttl;
    }
  }
  store_->CreateJobs(
      std::move(jobs),
      [this, tokens = std::move(tokens), done = std::move(done)](
          absl::StatusOr<std::vector<CreateResult>> results) mutable {
        {
          KickList kicks;
          absl::MutexLock lock(&mu_);
          for (size_t i = 0; i < tokens.size(); ++i) {
            if (!results.ok() || !(*results)[i].created) {
              // Not stored, or an idempotent duplicate: the lease is unused.
              if (!tokens[i].empty()) {
                OnGranted(tokens[i],
                          results.ok()
                              ? absl::FailedPreconditionError("duplicate")
                              : results.status(),
                          kicks);
              }
              continue;
            }
            const JobRecord& job = (*results)[i].job;
            spdlog::debug("job submitted job_id={} queue={} kind={} state={}",
                          job.id, job.queue, job.kind, JobStateName(job.state));
            if (!tokens[i].empty()) {
              OnGranted(tokens[i], job, kicks);
            } else {
              Applied(job, kicks);
            }
          }
        }
        std::move(done)(std::move(results));
      });
}

absl::StatusOr<JobRecord> Broker::Get(int64_t id, bool with_payload) {
  FERRY_ASSIGN_OR_RETURN(JobRecord job, store_->GetJob(id, with_payload));
  if (job.state == JobState::kRunning) {
    // Heartbeats extend leases in memory only; show the live deadline.
    absl::MutexLock lock(&mu_);
    auto it = leases_.find(job.lease_token);
    if (it != leases_.end()) job.lease_deadline = it->second.deadline;
  }
  return job;
}

absl::StatusOr<std::vector<JobRecord>> Broker::List(const ListFilter& filter) {
  FERRY_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store_->ListJobs(filter));
  // Heartbeats extend leases in memory only; show the live deadlines.
  absl::MutexLock lock(&mu_);
  for (JobRecord& job : jobs) {
    if (job.state != JobState::kRunning) continue;
    auto it = leases_.find(job.lease_token);
    if (it != leases_.end()) job.lease_deadline = it->second.deadline;
  }
  return jobs;
}

void Broker::Cancel(int64_t id, std::string reason,
                    ResultCallback<JobRecord> done) {
  if (reason.empty()) reason = "cancelled";
  store_->CancelJob(
      id, reason, clock_->Now(),
      [this, reason,
       done = std::move(done)](absl::StatusOr<CancelResult> result) mutable {
        {
          KickList kicks;
          absl::MutexLock lock(&mu_);
          if (result.ok()) {
            const JobRecord& job = result->job;
            if (result->previous_state == JobState::kQueued) {
              EraseReady(job.queue, KeyOf(job.priority, job.run_at, job.id));
            }
            auto lease = leases_.find(result->previous_lease_token);
            if (lease != leases_.end()) {
              v1::ServerMessage msg;
              v1::Cancel* cancel = msg.mutable_cancel();
              cancel->set_lease_token(result->previous_lease_token);
              cancel->set_job_id(FormatJobId(job.id));
              cancel->set_reason(reason);
              Send(lease->second.session, std::move(msg), kicks);
              DropLease(result->previous_lease_token);
            }
            spdlog::info("job cancelled job_id={} queue={} previous_state={}",
                         job.id, job.queue,
                         JobStateName(result->previous_state));
            Notify(job, kicks);
          }
        }
        if (!result.ok()) {
          std::move(done)(result.status());
        } else {
          std::move(done)(std::move(result->job));
        }
      });
}

void Broker::Retry(int64_t id, ResultCallback<JobRecord> done) {
  store_->RetryJob(
      id, clock_->Now(),
      [this, done = std::move(done)](absl::StatusOr<JobRecord> job) mutable {
        {
          KickList kicks;
          absl::MutexLock lock(&mu_);
          if (job.ok()) {
            spdlog::info("job requeued by retry job_id={} queue={}", job->id,
                         job->queue);
            Applied(*job, kicks);
          }
        }
        std::move(done)(std::move(job));
      });
}

// -------------------------------------------------------------- watchers

absl::StatusOr<uint64_t> Broker::Watch(int64_t id,
                                       std::shared_ptr<JobSink> sink,
                                       absl::Time deadline) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  if (draining_) {
    // Drain closed the watchers it had; a new one would hang until the
    // server cuts it at the end of the grace period.
    return absl::UnavailableError("the broker is shutting down; retry later");
  }
  // Read under the lock: a change committed after this read is notified
  // after it, so the watcher sees states in order (Notify drops repeats).
  FERRY_ASSIGN_OR_RETURN(JobRecord job, store_->GetJob(id, false));
  kicks.Add(sink);
  sink->Push(job);
  if (IsTerminal(job.state)) {
    sink->Close(absl::OkStatus());
    return 0;
  }
  const uint64_t handle = next_handle_++;
  Watcher& watcher = watchers_[handle];
  watcher.job_id = id;
  watcher.sink = std::move(sink);
  watcher.deadline = deadline;
  watcher.last = job;
  watchers_of_job_[id].push_back(handle);
  return handle;
}

void Broker::Unwatch(uint64_t handle) {
  absl::MutexLock lock(&mu_);
  RemoveWatcher(handle);
}

void Broker::RemoveWatcher(uint64_t handle) {
  auto it = watchers_.find(handle);
  if (it == watchers_.end()) return;
  auto of_job = watchers_of_job_.find(it->second.job_id);
  if (of_job != watchers_of_job_.end()) {
    std::vector<uint64_t>& handles = of_job->second;
    handles.erase(std::remove(handles.begin(), handles.end(), handle),
                  handles.end());
    if (handles.empty()) watchers_of_job_.erase(of_job);
  }
  watchers_.erase(it);
}

void Broker::Notify(const JobRecord& job_in, KickList& kicks) {
  auto of_job = watchers_of_job_.find(job_in.id);
  if (of_job == watchers_of_job_.end()) return;
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
    const JobRecord& last = watcher.last;
    if (last.state == job.state && last.attempt == job.attempt &&
        last.updated_at == job.updated_at &&
        last.progress_percent == job.progress_percent &&
        last.progress_message == job.progress_message) {
      continue;  // already seen (read by Watch after this commit)
    }
    // Older than what the watcher has: committed before Watch's read, its
    // callback run after it. Sent, it would take the job back in time.
    // (Every write stamps updated_at with the broker's clock, in the order
    // it is queued; should that clock step back, an update may be skipped,
    // never a terminal state.)
    if (job.updated_at < last.updated_at && !IsTerminal(job.state)) continue;
    watcher.last = job;
    watcher.sink->Push(job);
    kicks.Add(watcher.sink);
    if (IsTerminal(job.state)) {
      watcher.sink->Close(absl::OkStatus());
      RemoveWatcher(handle);
    }
  }
}

void Broker::CloseWatchers(int64_t job_id, const absl::Status& status,
                           KickList& kicks) {
  auto of_job = watchers_of_job_.find(job_id);
  if (of_job == watchers_of_job_.end()) return;
  const std::vector<uint64_t> handles = of_job->second;
  for (uint64_t handle : handles) {
    Watcher& watcher = watchers_[handle];
    watcher.sink->Close(status);
    kicks.Add(watcher.sink);
    RemoveWatcher(handle);
  }
}

// ---------------------------------------------------------------- queues

absl::StatusOr<std::vector<QueueSnapshot>> Broker::QueueStats(
    absl::string_view queue) {
  FERRY_ASSIGN_OR_RETURN(std::vector<QueueCount> counts,
                         store_->CountJobs(queue));
  const absl::Time now = clock_->Now();
  std::map<std::string, QueueSnapshot> by_name;
  for (const QueueCount& count : counts) {
    QueueSnapshot& snapshot = by_name[count.queue];
    snapshot.name = count.queue;
    const int state = static_cast<int>(count.state);
    if (state >= 0 && state < 7) snapshot.counts[state] = count.count;
  }
  if (!queue.empty() && by_name.empty()) {
    by_name[std::string(queue)].name = std::string(queue);
  }
  absl::MutexLock lock(&mu_);
  for (const auto& [name, state] : queues_) {
    if (!queue.empty() && name != queue) continue;
    if (!state.paused && by_name.count(name) == 0) continue;
    QueueSnapshot& snapshot = by_name[name];
    snapshot.name = name;
    snapshot.paused = state.paused;
    // The oldest due job is the first of some priority: visit each
    // priority's first entry.
    int64_t oldest = INT64_MAX;
    for (auto it = state.ready.begin(); it != state.ready.end();
         it = state.ready.lower_bound(
             ReadyKey{it->neg_priority + 1, INT64_MIN, INT64_MIN})) {
      oldest = std::min(oldest, it->run_at_us);
    }
    if (oldest != INT64_MAX) {
      snapshot.oldest_queued_age =
          std::max(absl::ZeroDuration(), now - absl::FromUnixMicros(oldest));
    }
  }
  std::vector<QueueSnapshot> result;
  for (auto& [name, snapshot] : by_name) result.push_back(std::move(snapshot));
  return result;
}

void Broker::SetPaused(std::string queue, bool paused,
                       ResultCallback<bool> done) {
  store_->SetQueuePaused(
      queue, paused,
      [this, queue, paused,
       done = std::move(done)](absl::StatusOr<bool> changed) mutable {
        {
          KickList kicks;
          absl::MutexLock lock(&mu_);
          if (changed.ok()) {
            Queue(queue).paused = paused;
            if (*changed) {
              spdlog::info("queue {} queue={}", paused ? "paused" : "resumed",
                           queue);
            }
            if (!paused) Dispatch(queue, kicks);
          }
        }
        std::move(done)(std::move(changed));
      });
}

void Broker::Purge(std::string queue, JobState state,
                   ResultCallback<int64_t> done) {
  PurgeBatch(std::move(queue), state, 0, std::move(done));
}

void Broker::PurgeBatch(std::string queue, JobState state, int64_t total,
                        ResultCallback<int64_t> done) {
  const int limit = options_.delete_batch;
  store_->DeleteJobs(
      queue, state, limit,
      [this, queue, state, total, limit, done = std::move(done)](
          absl::StatusOr<std::vector<JobKey>> deleted) mutable {
        if (!deleted.ok()) {
          std::move(done)(deleted.status());
          return;
        }
        {
          KickList kicks;
          absl::MutexLock lock(&mu_);
          for (const JobKey& key : *deleted) {
            if (state == JobState::kQueued) {
              EraseReady(key.queue, KeyOf(key.priority, key.run_at, key.id));
            }
            CloseWatchers(key.id, absl::NotFoundError("the job was purged"),
                          kicks);
          }
        }
        total += static_cast<int64_t>(deleted->size());
        if (static_cast<int>(deleted->size()) == limit) {
          PurgeBatch(std::move(queue), state, total, std::move(done));
          return;
        }
        spdlog::info("queue purged queue={} state={} purged={}", queue,
                     JobStateName(state), total);
        std::move(done)(total);
      });
}

// --------------------------------------------------------------- leases

void Broker::SetDeadline(const std::string& token, LeaseState& lease,
                         absl::Time deadline) {
  deadlines_.erase({lease.deadline, token});
  lease.deadline = deadline;
  deadlines_.insert({deadline, token});
}

void Broker::DropLease(const std::string& token) {
  auto it = leases_.find(token);
  if (it == leases_.end()) return;
  LeaseState& lease = it->second;
  auto of_job = lease_of_job_.find(lease.job_id);
  if (of_job != lease_of_job_.end() && of_job->second == token) {
    lease_of_job_.erase(of_job);
  }
  deadlines_.erase({lease.deadline, token});
  auto session = sessions_.find(lease.session);
  if (session != sessions_.end()) --session->second.leases;
  leases_.erase(it);
}

Broker::LeaseState* Broker::FindLease(const std::string& token,
                                      uint64_t session, std::string* why) {
  auto it = leases_.find(token);
  if (it == leases_.end()) {
    *why = "unknown lease: it expired, was cancelled, or already finished";
    return nullptr;
  }
  LeaseState& lease = it->second;
  if (lease.phase != LeasePhase::kActive) {
    *why = lease.phase == LeasePhase::kEnding
               ? "the lease is ending (it expired or a result is being stored)"
               : "the lease is not granted yet";
    return nullptr;
  }
  if (lease.session == session) return &lease;
  auto owner = sessions_.find(lease.session);
  if (owner != sessions_.end()) {
    // Held by a live stream. The same worker process may take it over (it
    // reconnected before the broker noticed the old stream die); anyone
    // else is presenting a foreign token.
    auto caller = sessions_.find(session);
    if (caller == sessions_.end() ||
        caller->second.identity.worker_id != owner->second.identity.worker_id) {
      *why = "the lease is held by another worker";
      return nullptr;
    }
    --owner->second.leases;
  }
  lease.session = session;
  auto caller = sessions_.find(session);
  if (caller != sessions_.end()) ++caller->second.leases;
  return &lease;
}

void Broker::EndAttempt(const std::string& token, LeaseState& lease,
                        Outcome outcome, bool reported, absl::Time now,
                        Then then) {
  lease.phase = LeasePhase::kEnding;
  deadlines_.erase({lease.deadline, token});
  AttemptOutcome end;
  end.now = now;
  end.reported = reported;
  if (outcome.success) {
    end.next_state = JobState::kSucceeded;
    end.result = std::move(outcome.output);
  } else {
    end.error = std::move(outcome.error);
    if (outcome.retryable && lease.attempt < lease.max_attempts) {
      end.next_state = JobState::kScheduled;
      end.run_at = now + RetryBackoff(lease.attempt, lease.initial_backoff,
                                      lease.max_backoff, Jitter());
    } else {
      end.next_state = JobState::kFailed;
    }
  }
  store_->FinishAttempt(
      lease.job_id, token, std::move(end),
      [this, token, reported,
       then = std::move(then)](absl::StatusOr<JobRecord> job) mutable {
        KickList kicks;
        absl::MutexLock lock(&mu_);
        if (job.ok() || LeaseGone(job.status())) {
          DropLease(token);
        } else {
          // The worker can resend its result after reconnecting.
          KeepLeaseAfterFailedEnd(token);
        }
        if (job.ok()) {
          if (reported) RememberResult(token, *job);
          if (job->state == JobState::kFailed) {
            spdlog::info(
                "job failed job_id={} queue={} attempt={} error=\"{}\"",
                job->id, job->queue, job->attempt, job->last_error);
          } else if (job->state == JobState::kScheduled) {
            spdlog::info(
                "job retry scheduled job_id={} queue={} attempt={} "
                "run_at={} error=\"{}\"",
                job->id, job->queue, job->attempt,
                absl::FormatTime(job->run_at), job->last_error);
          } else {
            spdlog::debug("job succeeded job_id={} queue={} attempt={}",
                          job->id, job->queue, job->attempt);
          }
          Applied(*job, kicks);
        }
        std::move(then)(job, kicks);
      });
}

bool Broker::ResultStored(const HeldLease& held) {
  if (recent_.contains(held.token)) return true;
  if (held.job_id == 0) return false;
  // After a broker restart recent_ is empty; the job row remembers the
  // token of the last stored result.
  absl::StatusOr<JobRecord> job = store_->GetJob(held.job_id, false);
  if (!job.ok() || job->result_token != held.token) return false;
  RememberResult(held.token, *job);
  return true;
}

void Broker::RememberResult(const std::string& token, const JobRecord& job) {
  if (recent_.emplace(token, RecentResult{job.id, job.state}).second) {
    recent_order_.push_back(token);
  }
  while (recent_order_.size() > kRecentResults) {
    recent_.erase(recent_order_.front());
    recent_order_.pop_front();
  }
}

void Broker::Send(uint64_t handle, v1::ServerMessage msg, KickList& kicks) {
  auto it = sessions_.find(handle);
  if (it == sessions_.end() || it->second.unary) return;
  it->second.sink->Push(std::move(msg));
  kicks.Add(it->second.sink);
}

void Broker::SendLeaseLost(uint64_t handle, int64_t job_id,
                           const std::string& token, absl::string_view reason,
                           KickList& kicks) {
  v1::ServerMessage msg;
  v1::LeaseLost* lost = msg.mutable_lease_lost();
  lost->set_lease_token(token);
  if (job_id != 0) lost->set_job_id(FormatJobId(job_id));
  lost->set_reason(std::string(reason));
  Send(handle, std::move(msg), kicks);
}

// --------------------------------------------------------------- streams

absl::StatusOr<uint64_t> Broker::OpenSession(WorkerIdentity identity,
                                             std::vector<HeldLease> held,
                                             int64_t initial_credits,
                                             std::shared_ptr<WorkerSink> sink) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  if (draining_) {
    return absl::UnavailableError(
        "the broker is shutting down; reconnect later");
  }
  const absl::Time now = clock_->Now();
  const uint64_t handle = next_handle_++;
  Session& session = sessions_[handle];
  session.handle = handle;
  session.session_id = RandomHex(8);
  session.identity = std::move(identity);
  session.sink = std::move(sink);
  session.hungry_in.assign(session.identity.queues.size(), false);
  session.connected_at = now;
  session.last_seen = now;
  kicks.Add(session.sink);

  v1::ServerMessage welcome;
  welcome.mutable_welcome()->set_session_id(session.session_id);
  ToProto(options_.policy.lease_ttl / 3,
          welcome.mutable_welcome()->mutable_heartbeat_interval());
  ToProto(options_.policy.lease_ttl,
          welcome.mutable_welcome()->mutable_lease_ttl());
  welcome.mutable_welcome()->set_accepts_batches(true);
  welcome.mutable_welcome()->set_max_output_bytes(
      static_cast<uint64_t>(options_.policy.max_payload_bytes));
  session.sink->Push(std::move(welcome));

  int resumed = 0;
  for (const HeldLease& h : held) {
    auto known = leases_.find(h.token);
    if (known != leases_.end() && known->second.job_id != h.job_id) {
      SendLeaseLost(handle, h.job_id, h.token,
                    "the lease token belongs to another job", kicks);
      continue;
    }
    auto pending = acks_.find(h.token);
    if (pending != acks_.end()) {
      // Its result is being stored right now: acknowledge it here.
      pending->second = handle;
      continue;
    }
    std::string why;
    LeaseState* lease = FindLease(h.token, handle, &why);
    if (lease == nullptr) {
      if (ResultStored(h)) continue;  // the worker will resend; we ack it
      SendLeaseLost(handle, h.job_id, h.token, why, kicks);
      continue;
    }
    SetDeadline(h.token, *lease, now + lease->ttl);
    ++resumed;
  }
  spdlog::info(
      "worker connected worker_id={} session_id={} hostname={} peer={} "
      "queues={} credits={} resumed_leases={}",
      session.identity.worker_id, session.session_id, session.identity.hostname,
      session.identity.peer, absl::StrJoin(session.identity.queues, ","),
      initial_credits, resumed);
  if (initial_credits > 0) {
    GrantCredits(session, initial_credits, /*reset=*/false, kicks);
  }
  return handle;
}

void Broker::GrantCredits(Session& session, int64_t credits, bool reset,
                          KickList& kicks) {
  // A reset may lower the count; a session with none is skipped (lazily)
  // when it comes up in a queue's hungry list.
  if (reset) ++session.credit_epoch;
  session.credits =
      std::min((reset ? 0 : session.credits) + credits, options_.max_credits);
  MarkHungry(session);
  // Dispatch adds and removes no session: `session` stays valid.
  for (const std::string& queue : session.identity.queues) {
    Dispatch(queue, kicks);
  }
}

void Broker::AddCredit(uint64_t handle, int64_t credits, bool reset) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(handle);
  if (it == sessions_.end() || credits < 0) return;
  it->second.last_seen = clock_->Now();
  GrantCredits(it->second, credits, reset, kicks);
}

void Broker::Heartbeat(uint64_t handle, const v1::Heartbeat& heartbeat) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(handle);
  if (it == sessions_.end()) return;
  const absl::Time now = clock_->Now();
  it->second.last_seen = now;
  for (const std::string& token : heartbeat.lease_tokens()) {
    ExtendLease(handle, token, now, kicks);
  }
  for (const v1::ProgressUpdate& update : heartbeat.progress()) {
    LeaseState* lease = ExtendLease(handle, update.lease_token(), now, kicks);
    if (lease != nullptr) {
      RecordProgress(*lease, update.lease_token(), update.progress(), nullptr);
    }
  }
}

Broker::LeaseState* Broker::ExtendLease(uint64_t handle,
                                        const std::string& token,
                                        absl::Time now, KickList& kicks) {
  std::string why;
  LeaseState* lease = FindLease(token, handle, &why);
  if (lease == nullptr) {
    // A result for it is being stored: the heartbeat is moot, not lost.
    if (acks_.contains(token)) return nullptr;
    auto recent = recent_.find(token);
    SendLeaseLost(handle, recent == recent_.end() ? 0 : recent->second.job_id,
                  token, why, kicks);
    return nullptr;
  }
  SetDeadline(token, *lease, now + lease->ttl);
  return lease;
}

void Broker::RecordProgress(const LeaseState& lease, const std::string& token,
                            const v1::Progress& progress,
                            ResultCallback<JobRecord> done) {
  std::string message = progress.message().substr(0, kMaxProgressMessage);
  const int32_t percent =
      static_cast<int32_t>(std::min<uint32_t>(progress.percent(), 100));
  store_->SetProgress(
      lease.job_id, token, percent, std::move(message), clock_->Now(),
      [this, done = std::move(done)](absl::StatusOr<JobRecord> job) mutable {
        if (job.ok()) {
          KickList kicks;
          absl::MutexLock lock(&mu_);
          Notify(*job, kicks);
        }
        if (done != nullptr) std::move(done)(std::move(job));
      });
}

void Broker::Complete(uint64_t handle, std::string token, Outcome outcome,
                      int64_t credits) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(handle);
  if (it == sessions_.end()) return;
  Session& session = it->second;
  const absl::Time now = clock_->Now();
  session.last_seen = now;
  EndReportedAttempt(handle, token, std::move(outcome), now, kicks);
  // Nothing above adds or removes a session: `session` is still valid.
  if (credits > 0) GrantCredits(session, credits, /*reset=*/false, kicks);
}

void Broker::EndReportedAttempt(uint64_t handle, const std::string& token,
                                Outcome outcome, absl::Time now,
                                KickList& kicks) {
  std::string why;
  LeaseState* lease = FindLease(token, handle, &why);
  if (lease == nullptr) {
    auto recent = recent_.find(token);
    auto pending = acks_.find(token);
    if (recent != recent_.end()) {
      // A result resent after a reconnect: it was stored the first time.
      SendResultAck(handle, token, recent->second.job_id, recent->second.state,
                    kicks);
    } else if (pending != acks_.end()) {
      // Resent while the first copy is being written: ack it here.
      pending->second = handle;
    } else {
      SendLeaseLost(handle, 0, token, why, kicks);
    }
    return;
  }
  const int64_t job_id = lease->job_id;
  acks_[token] = handle;
  EndAttempt(
      token, *lease, std::move(outcome), /*reported=*/true, now,
      [this, token, job_id](const absl::StatusOr<JobRecord>& job,
                            KickList& kicks) {
        mu_.AssertHeld();
        auto ack = acks_.find(token);
        const uint64_t handle = ack == acks_.end() ? 0 : ack->second;
        if (ack != acks_.end()) acks_.erase(ack);
        if (job.ok()) {
          SendResultAck(handle, token, job_id, job->state, kicks);
        } else if (LeaseGone(job.status())) {
          SendLeaseLost(handle, job_id, token, job.status().message(), kicks);
        } else {
          // Not stored: end the stream so the worker reconnects and
          // sends the result again. The session ends with it: a job
          // dispatched to it now would be dropped by the closing stream and
          // its lease left to expire.
          auto it = sessions_.find(handle);
          if (it != sessions_.end()) {
            it->second.sink->Close(absl::UnavailableError(absl::StrCat(
                "could not store the result: ", job.status().message())));
            kicks.Add(it->second.sink);
            EndSession(handle);
          }
        }
      });
}

void Broker::SendResultAck(uint64_t handle, const std::string& token,
                           int64_t job_id, JobState state, KickList& kicks) {
  v1::ServerMessage msg;
  v1::ResultAck* ack = msg.mutable_result_ack();
  ack->set_lease_token(token);
  ack->set_job_id(FormatJobId(job_id));
  ack->set_state(ToProto(state));
  Send(handle, std::move(msg), kicks);
}

void Broker::CloseSession(uint64_t handle) {
  absl::MutexLock lock(&mu_);
  EndSession(handle);
}

void Broker::EndSession(uint64_t handle) {
  auto it = sessions_.find(handle);
  if (it == sessions_.end()) return;
  int orphaned = 0;
  for (auto& [token, lease] : leases_) {
    if (lease.session == handle && lease.phase != LeasePhase::kGranting) {
      lease.session = 0;
      ++orphaned;
    }
  }
  spdlog::info("worker disconnected worker_id={} session_id={} leases_kept={}",
               it->second.identity.worker_id, it->second.session_id, orphaned);
  RemoveSession(handle);
}

void Broker::RemoveSession(uint64_t handle) {
  sessions_.erase(handle);
  unary_sessions_.erase(handle);
}

std::vector<WorkerSnapshot> Broker::ListWorkers() {
  absl::MutexLock lock(&mu_);
  std::vector<WorkerSnapshot> workers;
  for (const auto& [handle, session] : sessions_) {
    if (session.unary) continue;
    WorkerSnapshot snapshot;
    snapshot.identity = session.identity;
    snapshot.session_id = session.session_id;
    snapshot.credits = session.credits;
    snapshot.leases = session.leases;
    snapshot.connected_at = session.connected_at;
    snapshot.last_seen = session.last_seen;
    workers.push_back(std::move(snapshot));
  }
  std::sort(workers.begin(), workers.end(),
            [](const WorkerSnapshot& a, const WorkerSnapshot& b) {
              return a.connected_at < b.connected_at;
            });
  return workers;
}

// ----------------------------------------------------------- unary API

uint64_t Broker::Lease(WorkerIdentity identity, int64_t max_jobs,
                       absl::Time deadline,
                       ResultCallback<std::vector<v1::Assignment>> done) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  if (draining_) {
    kicks.Defer([done = std::move(done)]() mutable {
      std::move(done)(
          absl::UnavailableError("the broker is shutting down; retry later"));
    });
    return 0;
  }
  const uint64_t handle = next_handle_++;
  Session& session = sessions_[handle];
  session.handle = handle;
  session.identity = std::move(identity);
  session.unary = true;
  session.deadline = deadline;
  session.unary_done = std::move(done);
  session.hungry_in.assign(session.identity.queues.size(), false);
  session.connected_at = session.last_seen = clock_->Now();
  unary_sessions_.insert(handle);
  GrantCredits(session, max_jobs, /*reset=*/true, kicks);
  // Dispatching adds and removes no session: `session` is still valid.
  FinishUnaryIfDone(session, kicks);
  return sessions_.contains(handle) ? handle : 0;  // 0: finished at once
}

void Broker::CancelLease(uint64_t handle) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(handle);
  if (it == sessions_.end() || !it->second.unary) return;
  Session& session = it->second;
  // Leases still being written find no session when they land, and are
  // put back then (OnGranted). One that expired or was cancelled meanwhile
  // is already on its way out.
  std::vector<std::string> tokens;
  for (const v1::Assignment& assignment : session.assignments) {
    tokens.push_back(assignment.lease_token());
  }
  const int put_back = ReleaseActive(tokens);
  spdlog::info(
      "lease call ended by its caller (cancelled, deadline or disconnect) "
      "worker_id={} jobs_put_back={} "
      "leases_in_flight={}",
      session.identity.worker_id, put_back, session.granting);
  kicks.Defer([done = std::move(session.unary_done)]() mutable {
    std::move(done)(absl::CancelledError("the caller went away"));
  });
  RemoveSession(handle);
}

int Broker::ReleaseActive(const std::vector<std::string>& tokens) {
  int put_back = 0;
  for (const std::string& token : tokens) {
    auto lease = leases_.find(token);
    if (lease == leases_.end() || lease->second.phase != LeasePhase::kActive) {
      continue;
    }
    ReleaseUndelivered(lease->first, lease->second);
    ++put_back;
  }
  return put_back;
}

void Broker::PutBackUndelivered(const std::vector<std::string>& tokens) {
  absl::MutexLock lock(&mu_);
  const int put_back = ReleaseActive(tokens);
  spdlog::warn(
      "a Lease response did not reach its caller (cancelled, deadline, "
      "disconnect or too large) jobs={} jobs_put_back={}",
      tokens.size(), put_back);
}

void Broker::HeartbeatLease(std::string token,
                            std::optional<v1::Progress> progress,
                            ResultCallback<absl::Time> done) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  std::string why;
  LeaseState* lease = FindLease(token, 0, &why);
  if (lease == nullptr) {
    kicks.Defer([done = std::move(done), why]() mutable {
      std::move(done)(absl::FailedPreconditionError(
          absl::StrCat("lease lost: ", why, "; stop working on the job")));
    });
    return;
  }
  const absl::Time deadline = clock_->Now() + lease->ttl;
  SetDeadline(token, *lease, deadline);
  if (!progress.has_value()) {
    kicks.Defer([done = std::move(done), deadline]() mutable {
      std::move(done)(deadline);
    });
    return;
  }
  RecordProgress(*lease, token, *progress,
                 [done = std::move(done),
                  deadline](absl::StatusOr<JobRecord> job) mutable {
                   if (job.ok()) {
                     std::move(done)(deadline);
                   } else {
                     std::move(done)(job.status());
                   }
                 });
}

void Broker::CompleteLease(std::string token, Outcome outcome,
                           ResultCallback<JobState> done) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  std::string why;
  LeaseState* lease = FindLease(token, 0, &why);
  if (lease == nullptr) {
    auto recent = recent_.find(token);
    absl::StatusOr<JobState> answer =
        recent != recent_.end()
            ? absl::StatusOr<JobState>(recent->second.state)
            : absl::FailedPreconditionError(absl::StrCat("lease lost: ", why));
    kicks.Defer([done = std::move(done), answer]() mutable {
      std::move(done)(answer);
    });
    return;
  }
  EndAttempt(token, *lease, std::move(outcome), /*reported=*/true,
             clock_->Now(),
             [done = std::move(done)](const absl::StatusOr<JobRecord>& job,
                                      KickList& kicks) mutable {
               absl::StatusOr<JobState> answer =
                   job.ok() ? absl::StatusOr<JobState>(job->state)
                            : absl::StatusOr<JobState>(job.status());
               kicks.Defer([done = std::move(done), answer]() mutable {
                 std::move(done)(answer);
               });
             });
}

// ------------------------------------------------------------- lifecycle

void Broker::Tick() {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();

  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const std::string token = deadlines_.begin()->second;
    LeaseState& lease = leases_[token];
    spdlog::warn("lease expired job_id={} queue={} worker_id={} attempt={}",
                 lease.job_id, lease.queue, lease.worker_id, lease.attempt);
    SendLeaseLost(lease.session, lease.job_id, token,
                  "the lease expired: no heartbeat within its TTL", kicks);
    Outcome outcome;
    outcome.error = absl::StrCat("lease expired: worker ", lease.worker_id,
                                 " sent no heartbeat within ",
                                 absl::FormatDuration(lease.ttl));
    EndAttempt(token, lease, std::move(outcome), /*reported=*/false, now,
               [](const absl::StatusOr<JobRecord>&, KickList&) {});
  }

  if (next_scheduled_ <= now && !promoting_) PromoteDue(now);
  if (now >= next_retention_ && !deleting_expired_) DeleteExpired(now);

  const std::vector<uint64_t> unary(unary_sessions_.begin(),
                                    unary_sessions_.end());
  for (uint64_t handle : unary) {
    auto it = sessions_.find(handle);
    if (it != sessions_.end()) FinishUnaryIfDone(it->second, kicks);
  }

  std::vector<uint64_t> expired;
  for (const auto& [handle, watcher] : watchers_) {
    if (watcher.deadline <= now) expired.push_back(handle);
  }
  for (uint64_t handle : expired) {
    watchers_[handle].sink->Close(absl::OkStatus());
    kicks.Add(watchers_[handle].sink);
    RemoveWatcher(handle);
  }
}

absl::Time Broker::NextTickTime() {
  absl::MutexLock lock(&mu_);
  // A promotion or retention pass in flight goes on from its completion
  // (or the tick after it): its time, past by now, would make the ticker
  // spin until then.
  absl::Time next = absl::InfiniteFuture();
  if (!promoting_) next = std::min(next, next_scheduled_);
  if (!deleting_expired_) next = std::min(next, next_retention_);
  if (!deadlines_.empty()) next = std::min(next, deadlines_.begin()->first);
  for (uint64_t handle : unary_sessions_) {
    auto it = sessions_.find(handle);
    // A call with a lease being written is answered when the write lands
    // (OnGranted), not by a tick: its deadline, even past, is no reason
    // to wake the ticker.
    if (it != sessions_.end() && it->second.granting == 0) {
      next = std::min(next, it->second.deadline);
    }
  }
  for (const auto& [handle, watcher] : watchers_) {
    next = std::min(next, watcher.deadline);
  }
  return next;
}

void Broker::PromoteDue(absl::Time now) {
  promoting_ = true;
  store_->PromoteDueJobs(
      now, options_.promote_batch,
      [this, now](absl::StatusOr<std::vector<JobKey>> promoted) {
        KickList kicks;
        absl::MutexLock lock(&mu_);
        promoting_ = false;
        if (!promoted.ok()) {
          spdlog::error(
              "promoting due jobs failed status=\"{}\"; retrying in {}",
              promoted.status().ToString(),
              absl::FormatDuration(kStorageRetry));
          // Not at once: a failing disk would be asked again and again.
          // (Jobs scheduled meanwhile may bring it forward.)
          next_scheduled_ = clock_->Now() + kStorageRetry;
          return;
        }
        absl::flat_hash_set<std::string> queues;
        for (const JobKey& key : *promoted) {
          AddReady(key);
          queues.insert(key.queue);
          if (watchers_of_job_.contains(key.id)) {
            // Watchers want the whole job. The read runs before any later
            // callback, so it can only see this state or a newer one; a
            // newer one is deduplicated when its own callback notifies.
            kicks.Defer([this, id = key.id] {
              absl::StatusOr<JobRecord> job = store_->GetJob(id, false);
              if (!job.ok()) return;
              KickList kicks;
              absl::MutexLock lock(&mu_);
              Notify(*job, kicks);
            });
          }
        }
        for (const std::string& queue : queues) Dispatch(queue, kicks);
        if (static_cast<int>(promoted->size()) == options_.promote_batch) {
          PromoteDue(now);  // more are due
          return;
        }
        // Everything due is promoted; learn the next due time from disk.
        // Only store callbacks lower next_scheduled_, they run one at a
        // time in commit order, and this read runs before any later one:
        // it sees every job scheduled so far (and maybe some that later
        // callbacks will note again), so none is lost.
        next_scheduled_ = absl::InfiniteFuture();
        kicks.Defer([this] {
          absl::StatusOr<std::optional<absl::Time>> next =
              store_->NextScheduledTime();
          absl::MutexLock lock(&mu_);
          if (!next.ok()) {
            next_scheduled_ = clock_->Now() + kStorageRetry;  // unknown
          } else if (next->has_value()) {
            next_scheduled_ = std::min(next_scheduled_, **next);
          }
        });
      });
}

void Broker::DeleteExpired(absl::Time now) {
  deleting_expired_ = true;
  store_->DeleteFinishedBefore(
      now - options_.retention, options_.delete_batch,
      [this, now](absl::StatusOr<int64_t> deleted) {
        absl::MutexLock lock(&mu_);
        deleting_expired_ = false;
        if (!deleted.ok()) {
          spdlog::error("retention delete failed status=\"{}\"",
                        deleted.status().ToString());
          next_retention_ = now + absl::Minutes(1);
          return;
        }
        if (*deleted > 0) {
          spdlog::info("retention deleted jobs={} finished_before={}", *deleted,
                       absl::FormatTime(now - options_.retention));
        }
        // A full batch means more are waiting: go again on the next Tick.
        next_retention_ = *deleted == options_.delete_batch
                              ? absl::InfinitePast()
                              : now + absl::Minutes(1);
      });
}

void Broker::Drain(absl::string_view reason) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  draining_ = true;
  std::vector<uint64_t> handles;
  for (auto& [handle, session] : sessions_) handles.push_back(handle);
  for (uint64_t handle : handles) {
    auto it = sessions_.find(handle);
    if (it == sessions_.end()) continue;
    Session& session = it->second;
    if (session.unary) {
      FinishUnaryIfDone(session, kicks);
      continue;
    }
    v1::ServerMessage msg;
    msg.mutable_drain()->set_reason(std::string(reason));
    session.sink->Push(std::move(msg));
    kicks.Add(session.sink);
  }
  std::vector<uint64_t> watchers;
  for (const auto& [handle, watcher] : watchers_) watchers.push_back(handle);
  for (uint64_t handle : watchers) {
    watchers_[handle].sink->Close(
        absl::UnavailableError(absl::StrCat("the broker is ", reason)));
    kicks.Add(watchers_[handle].sink);
    RemoveWatcher(handle);
  }
  spdlog::info("broker draining reason=\"{}\" workers={}", reason,
               handles.size());
}

}  // namespace ferry
