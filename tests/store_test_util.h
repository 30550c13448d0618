#ifndef FERRY_TESTS_STORE_TEST_UTIL_H_
#define FERRY_TESTS_STORE_TEST_UTIL_H_

// Helpers for tests of a Store: a synchronous face for its asynchronous
// writes, a job with sane defaults, and fresh temporary directories.
//
//   FERRY_ASSERT_OK_AND_ASSIGN(CreateResult created,
//                              Create(*store, MakeJob("q", now)));
//   EXPECT_THAT(Lease(*store, created.job.id, "t1", "w1", now, kTtl), IsOk());

#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/sqlite/sqlite_store.h"
#include "storage/store.h"
#include "tests/temp_dir.h"

namespace ferry {

// Lets gtest print "RUNNING" instead of the bytes of an enum class.
inline void PrintTo(JobState state, std::ostream* os) {
  *os << JobStateName(state);
}

}  // namespace ferry

namespace ferry::testing {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// Damages a closed Ferry database the way a bad disk would: page 2, the
// root of the jobs table (the first table the schema makes), becomes
// garbage, while the header and the schema still read. PRAGMA quick_check
// then fails.
inline void DamageJobsTable(const std::string& path) {
  std::string bytes = ReadFile(path);
  const size_t page_size = 4096;  // SQLite's default
  ASSERT_GE(bytes.size(), 3 * page_size) << path;
  for (size_t i = page_size; i < 2 * page_size; ++i) bytes[i] = '\xab';
  WriteFile(path, bytes);
}

// Matches an OK StatusOr whose value matches `matcher`. (A candidate for
// tests/status_matchers.h; gmock's Optional() does not apply to StatusOr.)
MATCHER_P(
    IsOkAndHolds, matcher,
    "is OK and holds a value that " +
        ::testing::DescribeMatcher<typename std::decay_t<arg_type>::value_type>(
            matcher)) {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  ::testing::StringMatchResultListener inner;
  const bool matches = ::testing::ExplainMatchResult(matcher, *arg, &inner);
  *result_listener << "holds " << ::testing::PrintToString(*arg);
  if (!inner.str().empty()) *result_listener << ", " << inner.str();
  return matches;
}

// How long a test waits for a store callback before calling it lost. Far
// beyond any healthy commit: it only bounds a test that would otherwise hang.
inline constexpr absl::Duration kCallbackTimeout = absl::Seconds(60);

// Calls `start(callback)` and waits for the callback, so that an asynchronous
// write reads like a function call:
//   absl::StatusOr<JobRecord> job = Sync<JobRecord>([&](auto done) {
//     store.RetryJob(id, now, std::move(done));
//   });
// Returns DEADLINE_EXCEEDED if the callback has not run within
// kCallbackTimeout (the callback may still run later; it then writes only to
// state it shares ownership of).
template <typename T, typename F>
absl::StatusOr<T> Sync(F start) {
  struct State {
    absl::Notification done;
    absl::StatusOr<T> result = absl::UnknownError("callback never ran");
  };
  auto state = std::make_shared<State>();
  start(ResultCallback<T>([state](absl::StatusOr<T> result) {
    state->result = std::move(result);
    state->done.Notify();
  }));
  if (!state->done.WaitForNotificationWithTimeout(kCallbackTimeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("store callback did not run within ",
                     absl::FormatDuration(kCallbackTimeout)));
  }
  return std::move(state->result);
}

// A QUEUED job in `queue`, created, updated and due at `now`.
inline JobRecord MakeJob(absl::string_view queue, absl::Time now) {
  JobRecord job;
  job.queue = std::string(queue);
  job.kind = "k";
  job.state = JobState::kQueued;
  job.run_at = now;
  job.created_at = now;
  job.updated_at = now;
  job.max_attempts = 3;
  job.initial_backoff = absl::Seconds(1);
  job.max_backoff = absl::Minutes(5);
  job.lease_ttl = absl::Seconds(30);
  job.timeout = absl::Minutes(10);
  job.content_type = "application/octet-stream";
  job.payload = "payload";
  return job;
}

// ---- one-line writes ----

inline absl::StatusOr<std::vector<CreateResult>> CreateAll(
    Store& store, std::vector<JobRecord> jobs) {
  return Sync<std::vector<CreateResult>>(
      [&](auto done) { store.CreateJobs(std::move(jobs), std::move(done)); });
}

inline absl::StatusOr<CreateResult> Create(Store& store, JobRecord job) {
  std::vector<JobRecord> jobs;
  jobs.push_back(std::move(job));
  absl::StatusOr<std::vector<CreateResult>> results =
      CreateAll(store, std::move(jobs));
  if (!results.ok()) return results.status();
  if (results->size() != 1) {
    return absl::InternalError(
        absl::StrCat("CreateJobs of one job returned ", results->size()));
  }
  return std::move(results->front());
}

// Leases job `id` to `worker_id` under `token`; the deadline is now + the
// job's lease_ttl.
inline absl::StatusOr<JobRecord> Lease(Store& store, int64_t id,
                                       absl::string_view token,
                                       absl::string_view worker_id,
                                       absl::Time now) {
  LeaseGrant grant;
  grant.token = std::string(token);
  grant.worker_id = std::string(worker_id);
  grant.now = now;
  return Sync<JobRecord>([&](auto done) {
    store.LeaseJob(id, std::move(grant), std::move(done));
  });
}

inline absl::StatusOr<JobRecord> Finish(Store& store, int64_t id,
                                        absl::string_view token,
                                        AttemptOutcome outcome) {
  return Sync<JobRecord>([&](auto done) {
    store.FinishAttempt(id, std::string(token), std::move(outcome),
                        std::move(done));
  });
}

inline AttemptOutcome Succeeded(absl::Time now, absl::string_view result) {
  AttemptOutcome outcome;
  outcome.next_state = JobState::kSucceeded;
  outcome.now = now;
  outcome.result = std::string(result);
  return outcome;
}

inline AttemptOutcome Failed(absl::Time now, absl::string_view error) {
  AttemptOutcome outcome;
  outcome.next_state = JobState::kFailed;
  outcome.now = now;
  outcome.error = std::string(error);
  return outcome;
}

// A failed attempt that is retried at `run_at`.
inline AttemptOutcome RetryAt(absl::Time now, absl::Time run_at,
                              absl::string_view error) {
  AttemptOutcome outcome;
  outcome.next_state = JobState::kScheduled;
  outcome.now = now;
  outcome.run_at = run_at;
  outcome.error = std::string(error);
  return outcome;
}

inline absl::StatusOr<JobRecord> Release(Store& store, int64_t id,
                                         absl::string_view token,
                                         absl::Time now) {
  return Sync<JobRecord>([&](auto done) {
    store.ReleaseLease(id, std::string(token), now, std::move(done));
  });
}

inline absl::StatusOr<JobRecord> Progress(Store& store, int64_t id,
                                          absl::string_view token,
                                          int32_t percent,
                                          absl::string_view message,
                                          absl::Time now) {
  return Sync<JobRecord>([&](auto done) {
    store.SetProgress(id, std::string(token), percent, std::string(message),
                      now, std::move(done));
  });
}

inline absl::StatusOr<CancelResult> Cancel(Store& store, int64_t id,
                                           absl::string_view reason,
                                           absl::Time now) {
  return Sync<CancelResult>([&](auto done) {
    store.CancelJob(id, std::string(reason), now, std::move(done));
  });
}

inline absl::StatusOr<JobRecord> Retry(Store& store, int64_t id,
                                       absl::Time now) {
  return Sync<JobRecord>(
      [&](auto done) { store.RetryJob(id, now, std::move(done)); });
}

inline absl::StatusOr<std::vector<JobKey>> Promote(Store& store, absl::Time now,
                                                   int limit) {
  return Sync<std::vector<JobKey>>(
      [&](auto done) { store.PromoteDueJobs(now, limit, std::move(done)); });
}

inline absl::StatusOr<std::vector<JobKey>> Delete(Store& store,
                                                  absl::string_view queue,
                                                  JobState state, int limit) {
  return Sync<std::vector<JobKey>>([&](auto done) {
    store.DeleteJobs(std::string(queue), state, limit, std::move(done));
  });
}

inline absl::StatusOr<int64_t> DeleteFinished(Store& store, absl::Time cutoff,
                                              int limit) {
  return Sync<int64_t>([&](auto done) {
    store.DeleteFinishedBefore(cutoff, limit, std::move(done));
  });
}

inline absl::StatusOr<bool> SetPaused(Store& store, absl::string_view queue,
                                      bool paused) {
  return Sync<bool>([&](auto done) {
    store.SetQueuePaused(std::string(queue), paused, std::move(done));
  });
}

// ---- stores and directories ----

// Opens (or creates) a store in directory `dir`. Opening the same directory
// again after the store is destroyed must find everything it acknowledged.
using StoreFactory =
    absl::StatusOr<std::unique_ptr<Store>> (*)(const std::string& dir);

// The SQLite store, in `<dir>/ferry.db`.
inline absl::StatusOr<std::unique_ptr<Store>> OpenTempSqliteStore(
    const std::string& dir) {
  SqliteOptions options;
  options.path = dir + "/ferry.db";
  return OpenSqliteStore(options);
}

}  // namespace ferry::testing

#endif  // FERRY_TESTS_STORE_TEST_UTIL_H_
