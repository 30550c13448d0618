#ifndef FERRY_TESTS_TOOLS_HISTORY_H_
#define FERRY_TESTS_TOOLS_HISTORY_H_

// A history of what clients and workers saw of one broker, and a checker
// that holds it against the broker's final database. Load generators
// record every client-visible event (a Recorder per process, one file
// each); after the run, Check reports each broken promise:
//
//   lost               a Submit was acknowledged and the job is not in the
//                      database
//   double-accept      two results were accepted for one attempt of a job
//   stale-accept       a result was accepted although the job had been
//                      leased again before it was sent (a zombie worker)
//   stale-stored       the stored result came from a lease that was not the
//                      job's last
//   refused-stored     the stored result is one the broker refused
//   over-run           a job ran (was leased to a worker) more times than
//                      its max_attempts
//   terminal-changed   a job seen SUCCEEDED, FAILED or CANCELLED was later
//                      seen in another state, or ended in one
//   idempotency-split  one idempotency key in one queue gave two job ids
//
// Times are the recording machine's CLOCK_REALTIME in microseconds; all
// recorders of a run must share a machine.

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "storage/store.h"

namespace ferry::history {

enum class EventType {
  kSubmitSent,     // ref, queue, key
  kSubmitOk,       // ref, job_id
  kSubmitFailed,   // ref, detail
  kLeased,         // job_id, token, attempt (a worker received it)
  kResultSent,     // job_id, token, detail (the result)
  kResultOk,       // job_id, token
  kResultRefused,  // job_id, token, detail
  kObserved,       // job_id, detail (the state a client read)
};

struct Event {
  int64_t time_us = 0;
  EventType type = EventType::kSubmitSent;
  std::string process;  // who recorded it
  std::string ref;      // a submit's own name, unique in the run
  int64_t job_id = 0;
  std::string token;
  int32_t attempt = 0;
  std::string queue;
  std::string key;
  std::string detail;
};

// A job id as the API spells it ("42") as the history keeps it; -1 if it
// is not a number.
int64_t IdOf(absl::string_view id);

// An event about one lease of a job (kLeased, kResult*).
Event LeaseEvent(EventType type, int64_t job_id, absl::string_view token,
                 int32_t attempt = 0);

// Appends events to a file, one line each, flushed per line (a process
// killed with SIGKILL loses at most the line it was writing, which the
// reader skips). Thread-safe.
class Recorder {
 public:
  static absl::StatusOr<std::unique_ptr<Recorder>> Open(const std::string& path,
                                                        std::string process);
  ~Recorder();

  void SubmitSent(absl::string_view ref, absl::string_view queue,
                  absl::string_view key);
  void SubmitOk(absl::string_view ref, int64_t job_id);
  void SubmitFailed(absl::string_view ref, absl::string_view why);
  void Leased(int64_t job_id, absl::string_view token, int32_t attempt);
  void ResultSent(int64_t job_id, absl::string_view token,
                  absl::string_view result);
  void ResultOk(int64_t job_id, absl::string_view token);
  void ResultRefused(int64_t job_id, absl::string_view token,
                     absl::string_view why);
  void Observed(int64_t job_id, JobState state);

  void Record(Event event);

 private:
  Recorder(std::FILE* file, std::string process)
      : file_(file), process_(std::move(process)) {}
  std::FILE* const file_;
  const std::string process_;
  absl::Mutex mu_;
};

// One event per line; Parse(Format(e)) == e.
std::string FormatEvent(const Event& event);
absl::StatusOr<Event> ParseEvent(absl::string_view line);

// The events of every file, in time order. A last line cut short (the
// recorder was killed while writing it) is skipped; any other bad line is
// an error naming the file and line.
absl::StatusOr<std::vector<Event>> ReadHistory(
    const std::vector<std::string>& paths);

// What the checker needs of each job in the final database.
struct FinalJob {
  int64_t id = 0;
  std::string queue;
  std::string key;
  JobState state = JobState::kQueued;
  int32_t attempt = 0;
  int32_t max_attempts = 0;
  std::string result;
  std::string result_token;
};

absl::StatusOr<std::vector<FinalJob>> ReadFinalJobs(Store& store);

struct Violation {
  std::string kind;  // see the list at the top
  int64_t job_id = 0;
  std::string detail;
};

struct Report {
  int64_t events = 0;
  int64_t submits_acked = 0;
  int64_t jobs_in_database = 0;
  int64_t leases_received = 0;
  int64_t results_accepted = 0;
  int64_t results_refused = 0;
  // Jobs a worker received more than once (a retry, or a lease that ran
  // out around a crash): allowed, and counted.
  int64_t jobs_run_more_than_once = 0;
  std::vector<Violation> violations;
  // Violations by kind, for the summary.
  std::map<std::string, int64_t> by_kind;
};

Report Check(const std::vector<Event>& history,
             const std::vector<FinalJob>& final_jobs);

// A few lines a reader can quote: the counts, then each violation (at
// most `max_listed`).
std::string FormatReport(const Report& report, int max_listed = 20);

}  // namespace ferry::history

#endif  // FERRY_TESTS_TOOLS_HISTORY_H_
