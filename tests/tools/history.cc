#include "tests/tools/history.h"

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace ferry::history {
namespace {

constexpr absl::string_view kTypeNames[] = {
    "submit_sent", "submit_ok", "submit_failed",  "leased",
    "result_sent", "result_ok", "result_refused", "observed"};
constexpr int kFields = 10;

int64_t NowMicros() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

std::optional<JobState> StateNamed(absl::string_view name) {
  for (JobState state :
       {JobState::kScheduled, JobState::kQueued, JobState::kRunning,
        JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    if (JobStateName(state) == name) return state;
  }
  return std::nullopt;
}

}  // namespace

int64_t IdOf(absl::string_view id) {
  int64_t n = 0;
  return absl::SimpleAtoi(id, &n) ? n : -1;
}

Event LeaseEvent(EventType type, int64_t job_id, absl::string_view token,
                 int32_t attempt) {
  Event e;
  e.type = type;
  e.job_id = job_id;
  e.token = std::string(token);
  e.attempt = attempt;
  return e;
}

absl::StatusOr<std::unique_ptr<Recorder>> Recorder::Open(
    const std::string& path, std::string process) {
  std::FILE* file = std::fopen(path.c_str(), "a");
  if (file == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<Recorder>(new Recorder(file, std::move(process)));
}

Recorder::~Recorder() { std::fclose(file_); }

void Recorder::Record(Event event) {
  event.time_us = NowMicros();
  event.process = process_;
  const std::string line = FormatEvent(event) + "\n";
  absl::MutexLock lock(&mu_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

void Recorder::SubmitSent(absl::string_view ref, absl::string_view queue,
                          absl::string_view key) {
  Event e;
  e.type = EventType::kSubmitSent;
  e.ref = std::string(ref);
  e.queue = std::string(queue);
  e.key = std::string(key);
  Record(std::move(e));
}

void Recorder::SubmitOk(absl::string_view ref, int64_t job_id) {
  Event e;
  e.type = EventType::kSubmitOk;
  e.ref = std::string(ref);
  e.job_id = job_id;
  Record(std::move(e));
}

void Recorder::SubmitFailed(absl::string_view ref, absl::string_view why) {
  Event e;
  e.type = EventType::kSubmitFailed;
  e.ref = std::string(ref);
  e.detail = std::string(why);
  Record(std::move(e));
}

void Recorder::Leased(int64_t job_id, absl::string_view token,
                      int32_t attempt) {
  Record(LeaseEvent(EventType::kLeased, job_id, token, attempt));
}

void Recorder::ResultSent(int64_t job_id, absl::string_view token,
                          absl::string_view result) {
  Event e = LeaseEvent(EventType::kResultSent, job_id, token);
  e.detail = std::string(result);
  Record(std::move(e));
}

void Recorder::ResultOk(int64_t job_id, absl::string_view token) {
  Record(LeaseEvent(EventType::kResultOk, job_id, token));
}

void Recorder::ResultRefused(int64_t job_id, absl::string_view token,
                             absl::string_view why) {
  Event e = LeaseEvent(EventType::kResultRefused, job_id, token);
  e.detail = std::string(why);
  Record(std::move(e));
}

void Recorder::Observed(int64_t job_id, JobState state) {
  Event e;
  e.type = EventType::kObserved;
  e.job_id = job_id;
  e.detail = std::string(JobStateName(state));
  Record(std::move(e));
}

std::string FormatEvent(const Event& e) {
  // Tab-separated; text fields C-escaped, so no field holds a tab or a
  // newline.
  return absl::StrJoin(
      {absl::StrCat(e.time_us),
       std::string(kTypeNames[static_cast<int>(e.type)]),
       absl::CEscape(e.process), absl::CEscape(e.ref), absl::StrCat(e.job_id),
       absl::CEscape(e.token), absl::StrCat(e.attempt), absl::CEscape(e.queue),
       absl::CEscape(e.key), absl::CEscape(e.detail)},
      "\t");
}

absl::StatusOr<Event> ParseEvent(absl::string_view line) {
  std::vector<absl::string_view> f = absl::StrSplit(line, '\t');
  if (f.size() != kFields) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", kFields, " fields, got ", f.size()));
  }
  Event e;
  const auto* type =
      std::find(std::begin(kTypeNames), std::end(kTypeNames), f[1]);
  if (type == std::end(kTypeNames)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown event ", f[1]));
  }
  e.type = static_cast<EventType>(type - std::begin(kTypeNames));
  std::string* text[] = {&e.process, &e.ref, &e.token,
                         &e.queue,   &e.key, &e.detail};
  const absl::string_view raw[] = {f[2], f[3], f[5], f[7], f[8], f[9]};
  for (int i = 0; i < 6; ++i) {
    if (!absl::CUnescape(raw[i], text[i])) {
      return absl::InvalidArgumentError(absl::StrCat("bad escape in ", raw[i]));
    }
  }
  if (!absl::SimpleAtoi(f[0], &e.time_us) ||
      !absl::SimpleAtoi(f[4], &e.job_id) ||
      !absl::SimpleAtoi(f[6], &e.attempt)) {
    return absl::InvalidArgumentError("a number field is not a number");
  }
  return e;
}

absl::StatusOr<std::vector<Event>> ReadHistory(
    const std::vector<std::string>& paths) {
  std::vector<Event> events;
  for (const std::string& path : paths) {
    std::ifstream in(path);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
    std::string line;
    int number = 0;
    while (std::getline(in, line)) {
      ++number;
      const bool last = in.peek() == std::char_traits<char>::eof();
      absl::StatusOr<Event> event = ParseEvent(line);
      if (!event.ok()) {
        if (last) break;  // cut short by a kill
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", number, ": ", event.status().message()));
      }
      events.push_back(*std::move(event));
    }
  }
  std::stable_sort(
      events.begin(), events.end(),
      [](const Event& a, const Event& b) { return a.time_us < b.time_us; });
  return events;
}

absl::StatusOr<std::vector<FinalJob>> ReadFinalJobs(Store& store) {
  std::vector<FinalJob> jobs;
  ListFilter filter;
  filter.oldest_first = true;
  filter.with_payload = true;
  filter.limit = 1000;
  while (true) {
    absl::StatusOr<std::vector<JobRecord>> page = store.ListJobs(filter);
    if (!page.ok()) return page.status();
    for (const JobRecord& job : *page) {
      jobs.push_back({job.id, job.queue, job.idempotency_key, job.state,
                      job.attempt, job.max_attempts, job.result,
                      job.result_token});
    }
    if (static_cast<int>(page->size()) < filter.limit) break;
    filter.after_id = page->back().id;
  }
  return jobs;
}

Report Check(const std::vector<Event>& history,
             const std::vector<FinalJob>& final_jobs) {
  Report report;
  report.events = static_cast<int64_t>(history.size());
  report.jobs_in_database = static_cast<int64_t>(final_jobs.size());
  auto violate = [&report](std::string kind, int64_t job_id,
                           std::string detail) {
    ++report.by_kind[kind];
    report.violations.push_back({std::move(kind), job_id, std::move(detail)});
  };

  absl::flat_hash_map<int64_t, const FinalJob*> final_by_id;
  for (const FinalJob& job : final_jobs) final_by_id[job.id] = &job;

  struct Lease {
    int32_t attempt = 0;
    int64_t received_us = 0;
  };
  struct JobHistory {
    std::map<std::string, Lease> leases;                // by token
    std::map<int32_t, std::set<std::string>> accepted;  // attempt -> tokens
    std::set<std::string> refused;
    std::map<std::string, int64_t> sent_us;  // token -> first result sent
    std::optional<JobState> terminal;        // first terminal state seen
  };
  std::map<int64_t, JobHistory> jobs;
  absl::flat_hash_map<std::string, std::pair<std::string, std::string>>
      submit_of;  // ref -> (queue, key)
  std::map<std::pair<std::string, std::string>, std::set<int64_t>> by_key;

  for (const Event& e : history) {
    JobHistory& job = jobs[e.job_id];
    switch (e.type) {
      case EventType::kSubmitSent:
        submit_of[e.ref] = {e.queue, e.key};
        break;
      case EventType::kSubmitOk: {
        ++report.submits_acked;
        auto it = submit_of.find(e.ref);
        if (it != submit_of.end() && !it->second.second.empty()) {
          by_key[it->second].insert(e.job_id);
        }
        if (!final_by_id.contains(e.job_id)) {
          violate("lost", e.job_id,
                  absl::StrCat("submit ", e.ref, " was acknowledged"));
        }
        break;
      }
      case EventType::kSubmitFailed:
        break;
      case EventType::kLeased:
        ++report.leases_received;
        job.leases.try_emplace(e.token, Lease{e.attempt, e.time_us});
        break;
      case EventType::kResultSent:
        job.sent_us.try_emplace(e.token, e.time_us);
        break;
      case EventType::kResultOk: {
        ++report.results_accepted;
        auto lease = job.leases.find(e.token);
        if (lease == job.leases.end()) {
          // Its lease was not recorded (the recorder died writing it):
          // nothing to compare the result with.
          job.accepted[0].insert(e.token);
          break;
        }
        const int32_t attempt = lease->second.attempt;
        job.accepted[attempt].insert(e.token);
        // Was the job leased again, to anyone, before this was sent?
        auto sent = job.sent_us.find(e.token);
        const int64_t sent_us =
            sent == job.sent_us.end() ? e.time_us : sent->second;
        for (const auto& [token, other] : job.leases) {
          if (other.attempt > attempt && other.received_us < sent_us) {
            violate("stale-accept", e.job_id,
                    absl::StrCat("the result of attempt ", attempt,
                                 " was accepted after attempt ", other.attempt,
                                 " was leased"));
            break;
          }
        }
        break;
      }
      case EventType::kResultRefused:
        ++report.results_refused;
        job.refused.insert(e.token);
        break;
      case EventType::kObserved: {
        std::optional<JobState> state = StateNamed(e.detail);
        if (!state.has_value()) break;
        if (job.terminal.has_value() && *state != *job.terminal) {
          violate("terminal-changed", e.job_id,
                  absl::StrCat("seen ", JobStateName(*job.terminal), ", later ",
                               e.detail));
        } else if (IsTerminal(*state)) {
          job.terminal = state;
        }
        break;
      }
    }
  }

  for (const auto& [key, ids] : by_key) {
    if (ids.size() > 1) {
      violate("idempotency-split", *ids.begin(),
              absl::StrCat("key ", key.second, " in ", key.first, " gave ",
                           ids.size(), " jobs"));
    }
  }
  for (auto& [id, job] : jobs) {
    if (id == 0) continue;
    if (job.leases.size() > 1) ++report.jobs_run_more_than_once;
    for (const auto& [attempt, tokens] : job.accepted) {
      if (attempt > 0 && tokens.size() > 1) {
        violate("double-accept", id,
                absl::StrCat(tokens.size(), " results accepted for attempt ",
                             attempt));
      }
    }
    auto final_it = final_by_id.find(id);
    if (final_it == final_by_id.end()) continue;
    const FinalJob& final_job = *final_it->second;
    if (static_cast<int64_t>(job.leases.size()) > final_job.max_attempts) {
      violate("over-run", id,
              absl::StrCat("leased ", job.leases.size(), " times, ",
                           final_job.max_attempts, " attempts"));
    }
    if (job.terminal.has_value() && final_job.state != *job.terminal) {
      violate("terminal-changed", id,
              absl::StrCat("seen ", JobStateName(*job.terminal), ", ends ",
                           JobStateName(final_job.state)));
    }
    if (final_job.state == JobState::kSucceeded &&
        !final_job.result_token.empty()) {
      if (job.refused.count(final_job.result_token) > 0 &&
          !std::any_of(job.accepted.begin(), job.accepted.end(),
                       [&](const auto& entry) {
                         return entry.second.count(final_job.result_token) > 0;
                       })) {
        violate("refused-stored", id, "the stored result was refused");
      }
      auto lease = job.leases.find(final_job.result_token);
      if (lease != job.leases.end() &&
          lease->second.attempt != final_job.attempt) {
        violate(
            "stale-stored", id,
            absl::StrCat("the stored result is attempt ", lease->second.attempt,
                         "'s, the job's last is ", final_job.attempt));
      }
    }
  }
  return report;
}

std::string FormatReport(const Report& report, int max_listed) {
  std::string out = absl::StrCat(
      "events=", report.events, " submits_acked=", report.submits_acked,
      " jobs_in_database=", report.jobs_in_database,
      " leases_received=", report.leases_received,
      " results_accepted=", report.results_accepted,
      " results_refused=", report.results_refused,
      " jobs_run_more_than_once=", report.jobs_run_more_than_once,
      " violations=", report.violations.size(), "\n");
  for (const auto& [kind, count] : report.by_kind) {
    absl::StrAppend(&out, "  ", kind, ": ", count, "\n");
  }
  int listed = 0;
  for (const Violation& v : report.violations) {
    if (listed++ == max_listed) break;
    absl::StrAppend(&out, "  ", v.kind, " job_id=", v.job_id, ": ", v.detail,
                    "\n");
  }
  return out;
}

}  // namespace ferry::history
