#include "server/core/broker.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/backoff.h"
#include "base/log_format.h"
#include "base/status_macros.h"
#include "proto/protocol_limits.h"
#include "server/core/token.h"

namespace ferry {
namespace {

constexpr absl::string_view kUnknownLease =
    "unknown lease: it expired, was cancelled, or already finished";

// How long a background pass that failed in storage waits to try again.
constexpr absl::Duration kStorageRetry = absl::Seconds(1);

bool LeaseGone(const absl::Status& status) {
  return absl::IsFailedPrecondition(status) || absl::IsNotFound(status);
}

// An upper bound of an Assignment's size on the wire (ferry.v1.Assignment):
// every string with room for its tag and length, and the fixed-size fields
// (ids, numbers, times, durations) together.
int64_t EncodedSizeBound(const Assignment& assignment) {
  const JobRecord& job = assignment.job;
  int64_t bytes = 256;
  for (const std::string* field :
       {&job.queue, &job.kind, &job.payload, &job.result, &job.content_type,
        &job.idempotency_key, &job.last_error, &job.progress_message,
        &job.worker_id, &assignment.lease_token}) {
    bytes += static_cast<int64_t>(field->size()) + 8;
  }
  for (const auto& [key, value] : job.labels) {
    bytes += static_cast<int64_t>(key.size() + value.size()) + 16;
  }
  return bytes;
}

// The observer when none is given.
BrokerObserver* NoObserver() {
  static BrokerObserver* const none = new BrokerObserver();
  return none;
}

}  // namespace

Broker::Broker(Store* store, const Clock* clock, BrokerOptions options,
               BrokerObserver* observer)
    : store_(store),
      clock_(clock),
      options_(std::move(options)),
      observer_(observer != nullptr ? observer : NoObserver()),
      refused_log_(clock, /*per_second=*/10),
      watchers_refused_log_(clock, /*per_second=*/10),
      lease_failed_log_(clock, /*per_second=*/10),
      queues_full_log_(clock, /*per_second=*/10) {}

Broker::~Broker() = default;

absl::Status Broker::Start() {
  FERRY_ASSIGN_OR_RETURN(LiveJobs live, store_->LoadLiveJobs());
  FERRY_ASSIGN_OR_RETURN(std::vector<std::string> paused,
                         store_->PausedQueues());
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  for (const std::string& name : paused) dispatcher_.SetPaused(name, true);
  for (const JobKey& key : live.queued) {
    dispatcher_.AddReady(key.queue, Dispatcher::KeyOf(key));
  }
  for (const JobRecord& job : live.running) {
    LeaseState& lease = leases_.Add(job.lease_token);
    lease.job_id = job.id;
    lease.queue = job.queue;
    lease.worker_id = job.worker_id;
    lease.phase = LeasePhase::kActive;
    lease.attempt = job.attempt;
    lease.max_attempts = job.max_attempts;
    lease.ttl = job.lease_ttl;
    lease.initial_backoff = job.initial_backoff;
    lease.max_backoff = job.max_backoff;
    // Workers get at least one full TTL from the restart to come back.
    leases_.SetDeadline(job.lease_token, lease,
                        std::max(job.lease_deadline, now + job.lease_ttl));
  }
  next_scheduled_ = live.next_scheduled.value_or(absl::InfiniteFuture());
  spdlog::info("broker started queued={} running={} paused_queues={}",
               live.queued.size(), live.running.size(), paused.size());
  return absl::OkStatus();
}

// ---------------------------------------------------------------- memory

void Broker::NoteScheduled(absl::Time run_at) {
  next_scheduled_ = std::min(next_scheduled_, run_at);
}

void Broker::Applied(const JobRecord& job, KickList& kicks) {
  if (job.state == JobState::kQueued) {
    dispatcher_.AddReady(job.queue,
                         Dispatcher::KeyOf(job.priority, job.run_at, job.id));
    Dispatch(job.queue, kicks);
  } else if (job.state == JobState::kScheduled) {
    NoteScheduled(job.run_at);
  }
  Changed(job, kicks);
}

void Broker::Changed(const JobRecord& job, KickList& kicks) {
  observer_->JobChanged(job);
  watchers_.Notify(job, kicks);
}

double Broker::Jitter() { return absl::Uniform<double>(bitgen_, 0.0, 1.0); }

// -------------------------------------------------------------- dispatch

Taker* Broker::FindTaker(uint64_t handle) { return dispatcher_.Find(handle); }

std::string Broker::Grant(Taker& taker, const std::string& queue,
                          int64_t job_id) {
  std::string token = RandomHex(16);
  --taker.credits;
  ++taker.granting;
  ++taker.leases;
  LeaseState& lease = leases_.Add(token);
  lease.job_id = job_id;
  lease.queue = queue;
  lease.session = taker.handle;
  lease.worker_id = taker.identity.worker_id;
  lease.phase = LeasePhase::kGranting;
  lease.credit_epoch = taker.credit_epoch;
  return token;
}

void Broker::Dispatch(const std::string& queue, KickList& kicks) {
  if (draining_) return;
  if (lease_backoff_ && clock_->Now() < lease_retry_at_) return;
  absl::Time now = absl::InfinitePast();
  while (std::optional<Dispatcher::Match> match = dispatcher_.Next(queue)) {
    if (now == absl::InfinitePast()) now = clock_->Now();
    const Dispatcher::ReadyKey key = match->job;
    std::string token = Grant(*match->taker, queue, key.id);
    LeaseGrant grant{token, match->taker->identity.worker_id, now};
    store_->LeaseJob(key.id, std::move(grant),
                     [this, token, queue, key](absl::StatusOr<JobRecord> job) {
                       KickList kicks;
                       absl::MutexLock lock(&mu_);
                       if (!job.ok() && !LeaseGone(job.status())) {
                         // Storage failed: the job is still QUEUED on disk.
                         dispatcher_.AddReady(queue, key);
                       }
                       OnGranted(token, std::move(job), kicks);
                     });
  }
}

void Broker::ReturnCredit(uint64_t handle, uint64_t epoch, KickList& kicks) {
  Taker* taker = FindTaker(handle);
  if (taker == nullptr) return;
  // A reset since the grant said how many credits the worker holds now;
  // this one is not among them.
  if (epoch != taker->credit_epoch) return;
  taker->credits = std::min(taker->credits + 1, options_.max_credits);
  if (taker->kind == Taker::Kind::kLongPoll) {
    FinishPollIfDone(static_cast<LongPoll&>(*taker), kicks);
    if (polls_.Find(handle) == nullptr) return;  // answered
    // Still waiting: back in line for the next job, as a stream would be.
  }
  dispatcher_.MarkHungry(*taker);
  for (const std::string& queue : taker->identity.queues) {
    Dispatch(queue, kicks);
  }
}

void Broker::OnGranted(const std::string& token, absl::StatusOr<JobRecord> job,
                       KickList& kicks) {
  LeaseState* lease = leases_.Find(token);
  if (lease == nullptr) return;
  const uint64_t handle = lease->session;
  Taker* taker = FindTaker(handle);
  if (taker != nullptr) --taker->granting;

  if (!job.ok()) {
    const uint64_t epoch = lease->credit_epoch;
    const int64_t job_id = lease->job_id;
    DropLease(token);
    if (!LeaseGone(job.status())) {
      BackOffLeases(job_id, job.status());
      // A waiting Lease call with nothing yet hears why, instead of
      // waiting out its time for a write that keeps failing.
      if (taker != nullptr && taker->kind == Taker::Kind::kLongPoll) {
        LongPoll& poll = static_cast<LongPoll&>(*taker);
        if (poll.assignments.empty() && poll.granting == 0) {
          kicks.Defer([done = std::move(poll.done),
                       status = job.status()]() mutable {
            std::move(done)(absl::Status(
                status.code(),
                absl::StrCat("could not store the lease: ", status.message(),
                             "; retry later")));
          });
          polls_.Remove(poll.handle);
          return;
        }
      }
    }
    ReturnCredit(handle, epoch, kicks);
    return;
  }
  lease_backoff_ = false;
  lease_retry_delay_ = absl::ZeroDuration();

  lease->job_id = job->id;
  lease->attempt = job->attempt;
  lease->max_attempts = job->max_attempts;
  lease->ttl = job->lease_ttl;
  lease->initial_backoff = job->initial_backoff;
  lease->max_backoff = job->max_backoff;
  lease->phase = LeasePhase::kActive;
  leases_.SetDeadline(token, *lease, job->lease_deadline);
  Changed(*job, kicks);

  if (taker == nullptr) {
    // The worker left before the assignment reached it.
    ReleaseUndelivered(token, *lease);
    return;
  }

  spdlog::debug("job leased job_id={} queue={} worker_id={} attempt={}",
                job->id, job->queue, lease->worker_id, job->attempt);
  observer_->JobDispatched(*job, lease->worker_id);
  Assignment assignment{*std::move(job), token, lease->deadline};
  if (taker->kind == Taker::Kind::kLongPoll) {
    DeliverToPoll(static_cast<LongPoll&>(*taker), token, *lease,
                  std::move(assignment), kicks);
  } else {
    sessions_.Send(handle, std::move(assignment), kicks);
  }
}

void Broker::BackOffLeases(int64_t job_id, const absl::Status& status) {
  lease_retry_delay_ = std::clamp(2 * lease_retry_delay_,
                                  absl::Milliseconds(100), absl::Seconds(10));
  lease_backoff_ = true;
  lease_retry_at_ = clock_->Now() + lease_retry_delay_;
  int64_t suppressed = 0;
  if (lease_failed_log_.Allow(&suppressed)) {
    spdlog::error(
        "lease write failed job_id={} status=\"{}\" retry_in_ms={} "
        "suppressed_before={}",
        job_id, status.ToString(),
        absl::ToInt64Milliseconds(lease_retry_delay_), suppressed);
  }
}

void Broker::DeliverToPoll(LongPoll& poll, const std::string& token,
                           LeaseState& lease, Assignment assignment,
                           KickList& kicks) {
  // Unary leases belong to no stream: the token alone identifies them.
  lease.session = 0;
  --poll.leases;
  const int64_t bytes = EncodedSizeBound(assignment);
  if (!poll.assignments.empty() &&
      poll.assignment_bytes + bytes > options_.max_lease_response_bytes) {
    // The response is full: the next call gets this one.
    ReleaseUndelivered(token, lease);
  } else {
    poll.assignment_bytes += bytes;
    poll.assignments.push_back(std::move(assignment));
  }
  FinishPollIfDone(poll, kicks);
}

void Broker::ReleaseUndelivered(const std::string& token, LeaseState& lease) {
  lease.phase = LeasePhase::kEnding;
  leases_.ClearDeadline(token, lease);
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
  LeaseState* lease = leases_.Find(token);
  if (lease == nullptr) return;
  lease->phase = LeasePhase::kActive;
  leases_.SetDeadline(token, *lease,
                      std::max(lease->deadline, clock_->Now() + lease->ttl));
}

void Broker::FinishPollIfDone(LongPoll& poll, KickList& kicks) {
  if (poll.granting > 0) return;
  const bool done = !poll.assignments.empty() || poll.credits <= 0 ||
                    draining_ || clock_->Now() >= poll.deadline;
  if (!done) return;
  kicks.Defer([done = std::move(poll.done),
               assignments = std::move(poll.assignments)]() mutable {
    std::move(done)(std::move(assignments));
  });
  polls_.Remove(poll.handle);
}

// ------------------------------------------------------------------ jobs

void Broker::Submit(std::vector<JobRecord> jobs,
                    ResultCallback<std::vector<CreateResult>> done) {
  KickList kicks;  // answers a refusal once the lock is released
  absl::MutexLock lock(&mu_);
  if (absl::Status room = RoomForQueues(jobs); !room.ok()) {
    kicks.Defer([done = std::move(done), room]() mutable {
      std::move(done)(std::move(room));
    });
    return;
  }
  // A due job whose queue has a waiting worker is leased in the same
  // transaction that stores it: the submit's commit is also the lease's,
  // and the assignment leaves with the acknowledgement.
  std::vector<std::string> tokens(jobs.size());
  if (!draining_) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      JobRecord& job = jobs[i];
      if (job.state != JobState::kQueued) continue;
      Taker* taker = dispatcher_.TakerForNewJob(job.queue);
      if (taker == nullptr) continue;
      tokens[i] = Grant(*taker, job.queue, 0);
      job.state = JobState::kRunning;
      job.attempt = 1;
      job.started_at = job.created_at;
      job.worker_id = taker->identity.worker_id;
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
            JobRecord& job = (*results)[i].job;
            spdlog::debug("job submitted job_id={} queue={} kind={} state={}",
                          job.id, job.queue, job.kind, JobStateName(job.state));
            if (!tokens[i].empty()) {
              // The assignment takes the payload; the Submit response
              // never sends it back, so it moves rather than copies.
              std::string payload = std::move(job.payload);
              job.payload.clear();
              JobRecord leased = job;
              leased.payload = std::move(payload);
              OnGranted(tokens[i], std::move(leased), kicks);
            } else {
              Applied(job, kicks);
            }
          }
        }
        std::move(done)(std::move(results));
      });
}

absl::Status Broker::RoomForQueues(const std::vector<JobRecord>& jobs) {
  const int64_t held = static_cast<int64_t>(dispatcher_.queue_count());
  if (held + static_cast<int64_t>(jobs.size()) <= options_.max_queues) {
    return absl::OkStatus();  // cannot pass it, even if every queue is new
  }
  absl::flat_hash_set<absl::string_view> added;
  for (const JobRecord& job : jobs) {
    if (!dispatcher_.Holds(job.queue)) added.insert(job.queue);
  }
  if (held + static_cast<int64_t>(added.size()) <= options_.max_queues) {
    return absl::OkStatus();
  }
  int64_t suppressed = 0;
  if (queues_full_log_.Allow(&suppressed)) {
    spdlog::warn(
        "submit refused: too many queues queues={} max_queues={} "
        "suppressed_before={}",
        held, options_.max_queues, suppressed);
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "ferryd holds ", held,
      " queues with jobs waiting to run, workers "
      "waiting or paused, the most it may (ferryd --max_queues); submit to "
      "one of them, or let some drain"));
}

absl::StatusOr<JobRecord> Broker::Get(int64_t id, bool with_payload) {
  FERRY_ASSIGN_OR_RETURN(JobRecord job, store_->GetJob(id, with_payload));
  if (job.state == JobState::kRunning) {
    // Heartbeats extend leases in memory only; show the live deadline.
    absl::MutexLock lock(&mu_);
    if (const LeaseState* lease = leases_.Find(job.lease_token)) {
      job.lease_deadline = lease->deadline;
    }
  }
  return job;
}

absl::StatusOr<std::vector<JobRecord>> Broker::List(const ListFilter& filter) {
  FERRY_ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store_->ListJobs(filter));
  // Heartbeats extend leases in memory only; show the live deadlines.
  absl::MutexLock lock(&mu_);
  for (JobRecord& job : jobs) {
    if (job.state != JobState::kRunning) continue;
    if (const LeaseState* lease = leases_.Find(job.lease_token)) {
      job.lease_deadline = lease->deadline;
    }
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
              dispatcher_.EraseReady(
                  job.queue,
                  Dispatcher::KeyOf(job.priority, job.run_at, job.id));
            }
            const std::string& token = result->previous_lease_token;
            if (const LeaseState* lease = leases_.Find(token)) {
              sessions_.Send(lease->session, CancelEvent{token, job.id, reason},
                             kicks);
              DropLease(token);
            }
            spdlog::info("job cancelled job_id={} queue={} previous_state={}",
                         job.id, job.queue,
                         JobStateName(result->previous_state));
            Changed(job, kicks);
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
  uint64_t handle;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) {
      // Drain closed the watchers it had; a new one would hang until the
      // server cuts it at the end of the grace period.
      return absl::UnavailableError("the broker is shutting down; retry later");
    }
    if (static_cast<int64_t>(watchers_.size()) >= options_.max_watchers) {
      int64_t suppressed = 0;
      if (watchers_refused_log_.Allow(&suppressed)) {
        spdlog::warn(
            "watch refused: too many open max_watchers={} "
            "suppressed_before={}",
            options_.max_watchers, suppressed);
      }
      return absl::ResourceExhaustedError(absl::StrCat(
          "ferryd has ", options_.max_watchers,
          " Watch and Wait calls open (--max_watchers); retry later, or poll "
          "with Get"));
    }
    // Registered before the read: changes committed from here on are held
    // for it, so none falls between the read and the first update.
    handle = next_handle_++;
    watchers_.Add(handle, id, sink, deadline);
  }
  // Read without the lock: a store read never stalls dispatch.
  absl::StatusOr<JobRecord> job = store_->GetJob(id, false);
  KickList kicks;
  absl::MutexLock lock(&mu_);
  if (!job.ok()) {
    watchers_.Remove(handle);
    return job.status();
  }
  return watchers_.Prime(handle, *job, kicks) ? handle : 0;
}

void Broker::Unwatch(uint64_t handle) {
  absl::MutexLock lock(&mu_);
  watchers_.Remove(handle);
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
  dispatcher_.ForEachQueue([&](const Dispatcher::QueueView& view) {
    const std::string& name = *view.name;
    if (!queue.empty() && name != queue) return;
    if (!view.paused && by_name.count(name) == 0) return;
    QueueSnapshot& snapshot = by_name[name];
    snapshot.name = name;
    snapshot.paused = view.paused;
    if (view.oldest_ready.has_value()) {
      snapshot.oldest_queued_age =
          std::max(absl::ZeroDuration(), now - *view.oldest_ready);
    }
  });
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
            dispatcher_.SetPaused(queue, paused);
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
              dispatcher_.EraseReady(key.queue, Dispatcher::KeyOf(key));
            }
            watchers_.CloseJob(
                key.id, absl::NotFoundError("the job was purged"), kicks);
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

void Broker::DropLease(const std::string& token) {
  std::optional<LeaseState> lease = leases_.Drop(token);
  if (!lease.has_value()) return;
  if (Taker* taker = FindTaker(lease->session)) --taker->leases;
}

LeaseState* Broker::FindLease(const std::string& token, uint64_t session,
                              std::string* why) {
  LeaseState* lease = leases_.Find(token);
  if (lease == nullptr) {
    *why = std::string(kUnknownLease);
    return nullptr;
  }
  if (lease->phase != LeasePhase::kActive) {
    *why = lease->phase == LeasePhase::kEnding
               ? "the lease is ending (it expired or a result is being stored)"
               : "the lease is not granted yet";
    return nullptr;
  }
  if (lease->session == session) return lease;
  StreamSession* caller = sessions_.Find(session);
  if (StreamSession* owner = sessions_.Find(lease->session)) {
    // Held by a live stream. The same worker process may take it over (it
    // reconnected before the broker noticed the old stream die); anyone
    // else is presenting a foreign token.
    if (caller == nullptr ||
        caller->identity.worker_id != owner->identity.worker_id) {
      *why = "the lease is held by another worker";
      return nullptr;
    }
    --owner->leases;
  }
  lease->session = session;
  if (caller != nullptr) ++caller->leases;
  return lease;
}

void Broker::EndAttempt(const std::string& token, LeaseState& lease,
                        Outcome outcome, bool reported, absl::Time now,
                        Then then) {
  lease.phase = LeasePhase::kEnding;
  leases_.ClearDeadline(token, lease);
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
          if (reported) leases_.RememberResult(token, job->id, job->state);
          if (job->state == JobState::kFailed) {
            spdlog::info(
                "job failed job_id={} queue={} attempt={} error=\"{}\"",
                job->id, job->queue, job->attempt, LogValue(job->last_error));
          } else if (job->state == JobState::kScheduled) {
            spdlog::info(
                "job retry scheduled job_id={} queue={} attempt={} "
                "run_at={} error=\"{}\"",
                job->id, job->queue, job->attempt,
                absl::FormatTime(job->run_at), LogValue(job->last_error));
          } else {
            spdlog::debug("job succeeded job_id={} queue={} attempt={}",
                          job->id, job->queue, job->attempt);
          }
          Applied(*job, kicks);
        }
        std::move(then)(job, kicks);
      });
}

void Broker::SendLeaseLost(uint64_t session, int64_t job_id,
                           const std::string& token, absl::string_view reason,
                           KickList& kicks) {
  sessions_.Send(session, LeaseLostEvent{token, job_id, std::string(reason)},
                 kicks);
}

void Broker::Refused(uint64_t session, absl::string_view why) {
  const StreamSession* sender = sessions_.Find(session);
  const absl::string_view worker_id =
      sender == nullptr ? absl::string_view() : sender->identity.worker_id;
  observer_->LeaseRefused(worker_id, why);
  int64_t suppressed = 0;
  if (refused_log_.Allow(&suppressed)) {
    spdlog::warn(
        "lease refused worker_id={} session_id={} reason=\"{}\" "
        "suppressed_before={}",
        worker_id.empty() ? "-" : worker_id,
        sender == nullptr ? "-" : sender->session_id, why, suppressed);
  }
}

// --------------------------------------------------------------- streams

absl::StatusOr<uint64_t> Broker::OpenSession(WorkerIdentity identity,
                                             std::vector<HeldLease> held,
                                             int64_t initial_credits,
                                             std::shared_ptr<WorkerSink> sink) {
  // One list for the whole call: the Welcome leaves once the session has
  // its credits, as a worker listed right after it would expect.
  KickList kicks;
  uint64_t handle;
  int resumed = 0;
  // Held leases the broker does not know: was their result stored (before
  // a restart, say)? That takes a store read, done without the lock.
  std::vector<HeldLease> unknown;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) {
      return absl::UnavailableError(
          "the broker is shutting down; reconnect later");
    }
    if (static_cast<int64_t>(sessions_.size()) >= options_.max_sessions) {
      spdlog::warn(
          "worker refused: too many sessions worker_id={} peer={} "
          "max_sessions={}",
          identity.worker_id, identity.peer, options_.max_sessions);
      return absl::ResourceExhaustedError(absl::StrCat(
          "ferryd serves at most ", options_.max_sessions,
          " worker streams at once (ferryd --max_worker_sessions); retry "
          "later, or raise the limit"));
    }
    const absl::Time now = clock_->Now();
    handle = next_handle_++;
    StreamSession& session =
        sessions_.Add(handle, std::move(identity), std::move(sink), now);
    session.sink->Push(WelcomeEvent{
        session.session_id, options_.policy.lease_ttl / 3,
        options_.policy.lease_ttl, options_.policy.max_payload_bytes});
    kicks.Add(session.sink);

    for (HeldLease& h : held) {
      const LeaseState* known = leases_.Find(h.token);
      if (known != nullptr && known->job_id != h.job_id) {
        SendLeaseLost(handle, h.job_id, h.token,
                      "the lease token belongs to another job", kicks);
        continue;
      }
      // Its result is being stored right now: acknowledge it here.
      if (leases_.RetargetAck(h.token, handle)) continue;
      std::string why;
      LeaseState* lease = FindLease(h.token, handle, &why);
      if (lease == nullptr) {
        // The worker will resend a result that was stored; we ack it.
        if (leases_.RecentResult(h.token) != nullptr) continue;
        if (known == nullptr && h.job_id != 0) {
          unknown.push_back(std::move(h));
          continue;
        }
        SendLeaseLost(handle, h.job_id, h.token, why, kicks);
        continue;
      }
      leases_.SetDeadline(h.token, *lease, now + lease->ttl);
      ++resumed;
    }
  }

  // After a broker restart the recent results are gone; the job row
  // remembers the token of the last stored result.
  std::vector<absl::StatusOr<JobRecord>> rows;
  rows.reserve(unknown.size());
  for (const HeldLease& h : unknown) {
    rows.push_back(store_->GetJob(h.job_id, false));
  }

  absl::MutexLock lock(&mu_);
  StreamSession* session = sessions_.Find(handle);
  if (session == nullptr) return handle;  // closed meanwhile
  for (size_t i = 0; i < unknown.size(); ++i) {
    const HeldLease& h = unknown[i];
    const absl::StatusOr<JobRecord>& job = rows[i];
    if (job.ok() && job->result_token == h.token) {
      leases_.RememberResult(h.token, job->id, job->state);
      continue;
    }
    SendLeaseLost(handle, h.job_id, h.token, kUnknownLease, kicks);
  }
  spdlog::info(
      "worker connected worker_id={} session_id={} hostname=\"{}\" peer={} "
      "queues={} credits={} resumed_leases={}",
      session->identity.worker_id, session->session_id,
      LogValue(session->identity.hostname), session->identity.peer,
      absl::StrJoin(session->identity.queues, ","), initial_credits, resumed);
  if (initial_credits > 0) {
    GrantCredits(*session, initial_credits, /*reset=*/false, kicks);
  }
  return handle;
}

void Broker::GrantCredits(Taker& taker, int64_t credits, bool reset,
                          KickList& kicks) {
  // A reset may lower the count; a taker with none is skipped (lazily)
  // when it comes up in a queue's line.
  if (reset) ++taker.credit_epoch;
  taker.credits =
      std::min((reset ? 0 : taker.credits) + credits, options_.max_credits);
  dispatcher_.MarkHungry(taker);
  // Dispatch adds and removes no taker: `taker` stays valid.
  for (const std::string& queue : taker.identity.queues) {
    Dispatch(queue, kicks);
  }
}

void Broker::AddCredit(uint64_t handle, int64_t credits, bool reset) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  if (credits < 0) return;
  StreamSession* session = sessions_.Seen(handle, clock_->Now());
  if (session == nullptr) return;
  GrantCredits(*session, credits, reset, kicks);
}

void Broker::Heartbeat(uint64_t handle, const HeartbeatReport& heartbeat) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  if (sessions_.Seen(handle, now) == nullptr) return;
  for (const std::string& token : heartbeat.lease_tokens) {
    ExtendLease(handle, token, now, kicks);
  }
  for (const HeartbeatReport::WithProgress& update : heartbeat.progress) {
    LeaseState* lease = ExtendLease(handle, update.lease_token, now, kicks);
    if (lease != nullptr) {
      RecordProgress(*lease, update.lease_token, update.progress, nullptr);
    }
  }
}

LeaseState* Broker::ExtendLease(uint64_t handle, const std::string& token,
                                absl::Time now, KickList& kicks) {
  std::string why;
  LeaseState* lease = FindLease(token, handle, &why);
  if (lease == nullptr) {
    // A result for it is being stored: the heartbeat is moot, not lost.
    if (leases_.AckPending(token)) return nullptr;
    const LeaseTable::Recent* recent = leases_.RecentResult(token);
    Refused(handle, why);
    SendLeaseLost(handle, recent == nullptr ? 0 : recent->job_id, token, why,
                  kicks);
    return nullptr;
  }
  leases_.SetDeadline(token, *lease, now + lease->ttl);
  return lease;
}

void Broker::RecordProgress(const LeaseState& lease, const std::string& token,
                            const Progress& progress,
                            ResultCallback<JobRecord> done) {
  std::string message = progress.message.substr(0, kMaxProgressMessageLength);
  const int32_t percent =
      static_cast<int32_t>(std::min<uint32_t>(progress.percent, 100));
  store_->SetProgress(
      lease.job_id, token, percent, std::move(message), clock_->Now(),
      [this, done = std::move(done)](absl::StatusOr<JobRecord> job) mutable {
        if (job.ok()) {
          KickList kicks;
          absl::MutexLock lock(&mu_);
          Changed(*job, kicks);
        }
        if (done != nullptr) std::move(done)(std::move(job));
      });
}

void Broker::Complete(uint64_t handle, std::string token, Outcome outcome,
                      int64_t credits) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  StreamSession* session = sessions_.Seen(handle, now);
  if (session == nullptr) return;
  EndReportedAttempt(handle, token, std::move(outcome), now, kicks);
  // Nothing above adds or removes a session: `session` is still valid.
  if (credits > 0) GrantCredits(*session, credits, /*reset=*/false, kicks);
}

void Broker::EndReportedAttempt(uint64_t handle, const std::string& token,
                                Outcome outcome, absl::Time now,
                                KickList& kicks) {
  std::string why;
  LeaseState* lease = FindLease(token, handle, &why);
  if (lease == nullptr) {
    if (const LeaseTable::Recent* recent = leases_.RecentResult(token)) {
      // A result resent after a reconnect: it was stored the first time.
      sessions_.Send(handle,
                     ResultAckedEvent{token, recent->job_id, recent->state},
                     kicks);
    } else if (!leases_.RetargetAck(token, handle)) {
      // (Resent while the first copy is being written: acked here, then.)
      Refused(handle, why);
      SendLeaseLost(handle, 0, token, why, kicks);
    }
    return;
  }
  const int64_t job_id = lease->job_id;
  leases_.SetAckTarget(token, handle);
  EndAttempt(
      token, *lease, std::move(outcome), /*reported=*/true, now,
      [this, token, job_id](const absl::StatusOr<JobRecord>& job,
                            KickList& kicks) {
        mu_.AssertHeld();
        const uint64_t handle = leases_.TakeAckTarget(token);
        if (job.ok()) {
          sessions_.Send(handle, ResultAckedEvent{token, job_id, job->state},
                         kicks);
        } else if (LeaseGone(job.status())) {
          SendLeaseLost(handle, job_id, token, job.status().message(), kicks);
        } else if (StreamSession* session = sessions_.Find(handle)) {
          // Not stored: end the stream so the worker reconnects and
          // sends the result again. The session ends with it: a job
          // dispatched to it now would be dropped by the closing stream and
          // its lease left to expire.
          session->sink->Close(absl::UnavailableError(absl::StrCat(
              "could not store the result: ", job.status().message())));
          kicks.Add(session->sink);
          EndSession(handle);
        }
      });
}

void Broker::CloseSession(uint64_t handle) {
  absl::MutexLock lock(&mu_);
  EndSession(handle);
}

void Broker::EndSession(uint64_t handle) {
  StreamSession* session = sessions_.Find(handle);
  if (session == nullptr) return;
  const int orphaned = leases_.Orphan(handle);
  spdlog::info("worker disconnected worker_id={} session_id={} leases_kept={}",
               session->identity.worker_id, session->session_id, orphaned);
  sessions_.Remove(handle);
}

std::vector<WorkerSnapshot> Broker::ListWorkers() {
  absl::MutexLock lock(&mu_);
  return sessions_.Snapshot();
}

std::optional<std::string> Broker::LeaseQueue(const std::string& token) {
  absl::MutexLock lock(&mu_);
  const LeaseState* lease = leases_.Find(token);
  if (lease == nullptr) return std::nullopt;
  return lease->queue;
}

// ----------------------------------------------------------- unary API

uint64_t Broker::Lease(WorkerIdentity identity, int64_t max_jobs,
                       absl::Time deadline,
                       ResultCallback<std::vector<Assignment>> done) {
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
  LongPoll& poll =
      polls_.Add(handle, std::move(identity), deadline, std::move(done));
  GrantCredits(poll, max_jobs, /*reset=*/true, kicks);
  // Dispatching adds and removes no taker: `poll` is still valid.
  FinishPollIfDone(poll, kicks);
  return polls_.Find(handle) != nullptr ? handle : 0;  // 0: finished at once
}

void Broker::CancelLease(uint64_t handle) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  LongPoll* poll = polls_.Find(handle);
  if (poll == nullptr) return;
  // Leases still being written find no taker when they land, and are
  // put back then (OnGranted). One that expired or was cancelled meanwhile
  // is already on its way out.
  std::vector<std::string> tokens;
  for (const Assignment& assignment : poll->assignments) {
    tokens.push_back(assignment.lease_token);
  }
  const int put_back = ReleaseActive(tokens);
  spdlog::info(
      "lease call ended by its caller (cancelled, deadline or disconnect) "
      "worker_id={} jobs_put_back={} "
      "leases_in_flight={}",
      poll->identity.worker_id, put_back, poll->granting);
  kicks.Defer([done = std::move(poll->done)]() mutable {
    std::move(done)(absl::CancelledError("the caller went away"));
  });
  polls_.Remove(handle);
}

int Broker::ReleaseActive(const std::vector<std::string>& tokens) {
  int put_back = 0;
  for (const std::string& token : tokens) {
    LeaseState* lease = leases_.Find(token);
    if (lease == nullptr || lease->phase != LeasePhase::kActive) continue;
    ReleaseUndelivered(token, *lease);
    ++put_back;
  }
  return put_back;
}

void Broker::PutBackUndelivered(const std::vector<std::string>& tokens,
                                absl::string_view what) {
  absl::MutexLock lock(&mu_);
  const int put_back = ReleaseActive(tokens);
  spdlog::warn("{} jobs={} jobs_put_back={}", what, tokens.size(), put_back);
}

void Broker::HeartbeatLease(std::string token, std::optional<Progress> progress,
                            ResultCallback<absl::Time> done) {
  KickList kicks;
  absl::MutexLock lock(&mu_);
  std::string why;
  LeaseState* lease = FindLease(token, 0, &why);
  if (lease == nullptr) {
    Refused(0, why);
    kicks.Defer([done = std::move(done), why]() mutable {
      std::move(done)(absl::FailedPreconditionError(
          absl::StrCat("lease lost: ", why, "; stop working on the job")));
    });
    return;
  }
  const absl::Time deadline = clock_->Now() + lease->ttl;
  leases_.SetDeadline(token, *lease, deadline);
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
    const LeaseTable::Recent* recent = leases_.RecentResult(token);
    if (recent == nullptr) Refused(0, why);
    absl::StatusOr<JobState> answer =
        recent != nullptr
            ? absl::StatusOr<JobState>(recent->state)
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

  while (std::optional<std::string> token = leases_.FirstExpired(now)) {
    LeaseState& lease = *leases_.Find(*token);
    spdlog::warn("lease expired job_id={} queue={} worker_id={} attempt={}",
                 lease.job_id, lease.queue, lease.worker_id, lease.attempt);
    observer_->LeaseExpired(lease.job_id, lease.queue, lease.worker_id,
                            lease.attempt);
    SendLeaseLost(lease.session, lease.job_id, *token,
                  "the lease expired: no heartbeat within its TTL", kicks);
    Outcome outcome;
    outcome.error = absl::StrCat("lease expired: worker ", lease.worker_id,
                                 " sent no heartbeat within ",
                                 absl::FormatDuration(lease.ttl));
    EndAttempt(*token, lease, std::move(outcome), /*reported=*/false, now,
               [](const absl::StatusOr<JobRecord>&, KickList&) {});
  }

  if (lease_backoff_ && now >= lease_retry_at_) {
    // The backoff after a failed lease write is over: try again (a failure
    // sets the next, longer one).
    lease_backoff_ = false;
    std::vector<std::string> queues;
    dispatcher_.ForEachQueue([&queues](const Dispatcher::QueueView& view) {
      queues.push_back(*view.name);
    });
    for (const std::string& queue : queues) Dispatch(queue, kicks);
  }
  if (next_scheduled_ <= now && !promoting_) PromoteDue(now);
  if (now >= next_retention_ && !deleting_expired_) DeleteExpired(now);

  for (uint64_t handle : polls_.Handles()) {
    if (LongPoll* poll = polls_.Find(handle)) FinishPollIfDone(*poll, kicks);
  }
  watchers_.ExpireDue(now, kicks);
}

absl::Time Broker::NextTickTime() {
  absl::MutexLock lock(&mu_);
  // A promotion or retention pass in flight goes on from its completion
  // (or the tick after it): its time, past by now, would make the ticker
  // spin until then.
  absl::Time next = absl::InfiniteFuture();
  if (!promoting_) next = std::min(next, next_scheduled_);
  if (!deleting_expired_) next = std::min(next, next_retention_);
  next = std::min(next, leases_.NextDeadline());
  next = std::min(next, polls_.NextDeadline());
  next = std::min(next, watchers_.NextDeadline());
  if (lease_backoff_) next = std::min(next, lease_retry_at_);
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
        observer_->JobsPromoted(*promoted);
        absl::flat_hash_set<std::string> queues;
        for (const JobKey& key : *promoted) {
          dispatcher_.AddReady(key.queue, Dispatcher::KeyOf(key));
          queues.insert(key.queue);
          if (watchers_.Watched(key.id)) {
            // Watchers want the whole job. The read runs before any later
            // callback, so it can only see this state or a newer one; a
            // newer one is deduplicated when its own callback notifies.
            kicks.Defer([this, id = key.id] {
              absl::StatusOr<JobRecord> job = store_->GetJob(id, false);
              if (!job.ok()) return;
              KickList kicks;
              absl::MutexLock lock(&mu_);
              watchers_.Notify(*job, kicks);
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
  const std::vector<uint64_t> polls = polls_.Handles();
  for (uint64_t handle : polls) {
    if (LongPoll* poll = polls_.Find(handle)) FinishPollIfDone(*poll, kicks);
  }
  const std::vector<uint64_t> sessions = sessions_.Handles();
  for (uint64_t handle : sessions) {
    sessions_.Send(handle, DrainEvent{std::string(reason)}, kicks);
  }
  watchers_.CloseAll(
      absl::UnavailableError(absl::StrCat("the broker is ", reason)), kicks);
  spdlog::info("broker draining reason=\"{}\" workers={}", reason,
               polls.size() + sessions.size());
}

}  // namespace ferry
