#include "client/cli.h"

#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/broker_address.h"
#include "base/read_file.h"
#include "client/client.h"
#include "google/protobuf/util/json_util.h"
#include "proto/names.h"
#include "proto/time_util.h"

namespace ferry {
namespace {

// A last error is often the end of a command's stderr, several lines: one
// line per job in tables and watch output, the breaks shown as " | ".
std::string OneLine(absl::string_view text) {
  return absl::StrJoin(
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(text), '\n'), " | ");
}

// ------------------------------------------------------------ commands

struct Command {
  const char* name;
  const char* args;     // positional arguments, for usage
  const char* summary;  // one line
  const char* details;  // options and examples
  // Options: "name" takes a value, "name!" is a switch, "name*" repeats.
  std::vector<std::string> options;
};

const std::vector<Command>& Commands() {
  static const auto* commands = new std::vector<Command>{
      {"submit",
       "QUEUE",
       "submit a job and print its id",
       "  --kind K               job kind; workers pick a handler by it "
       "(default: default)\n"
       "  --payload STRING       the payload\n"
       "  --payload-file FILE    read the payload from FILE (- for stdin)\n"
       "  --content-type T       e.g. application/json (default "
       "application/octet-stream)\n"
       "  --priority N           -1000..1000, higher runs first (default 0)\n"
       "  --delay DURATION       run no earlier than this from now (30s, "
       "5m, 2h)\n"
       "  --at RFC3339           run no earlier than this time\n"
       "  --max-attempts N       attempts before the job FAILS (broker "
       "default 5)\n"
       "  --timeout DURATION     execution timeout the worker enforces "
       "(default none)\n"
       "  --lease-ttl DURATION   how long a worker may go silent (1s..24h; "
       "broker default 30s)\n"
       "  --idempotency-key K    submitting the same key again returns the "
       "same job\n"
       "  --label k=v            a label; repeat for more\n"
       "  --wait                 wait for the outcome; print the result, "
       "exit 0 only if it SUCCEEDED\n"
       "  --wait-timeout D       how long --wait waits (default 1h)\n"
       "Examples:\n"
       "  ferry submit emails --kind welcome --payload '{\"to\":\"a@b\"}'\n"
       "  ferry submit reports --payload-file report.json --delay 10m\n"
       "  echo hi | ferry submit echo --payload-file - --wait\n",
       {"kind", "payload", "payload-file", "content-type", "priority", "delay",
        "at", "max-attempts", "timeout", "lease-ttl", "idempotency-key",
        "label*", "wait!", "wait-timeout"}},
      {"get",
       "ID",
       "show a job",
       "Prints the job's fields; the payload and result are printed when "
       "they are text.\nExample:\n  ferry get 42\n",
       {}},
      {"wait",
       "ID",
       "wait for a job to finish and print its result",
       "  --timeout DURATION     give up after this long (default 1h; exit "
       "6)\n"
       "Exit 0 if it SUCCEEDED, 5 if it FAILED or was CANCELLED.\n"
       "Example:\n  ferry wait 42 --timeout 5m\n",
       {"timeout"}},
      {"watch",
       "ID",
       "print each state change of a job until it finishes",
       "Runs until the job finishes (no time limit): exit 0 if it "
       "SUCCEEDED,\n5 if it FAILED or was CANCELLED.\n"
       "Example:\n  ferry watch 42\n",
       {}},
      {"list",
       "",
       "list jobs, newest first",
       "  --queue Q              only this queue\n"
       "  --state S              only this state (see below)\n"
       "  --kind K               only this kind\n"
       "  --label k=v            only jobs with this label; repeat for "
       "more (all must match)\n"
       "  --limit N              at most N jobs (default 20)\n"
       "  --all                  every matching job, page after page\n"
       "  --oldest-first         oldest first\n"
       "States: scheduled, queued, running, succeeded, failed, cancelled.\n"
       "Examples:\n  ferry list --queue emails --state failed\n"
       "  ferry list --label tenant=acme --all --json\n",
       {"queue", "state", "kind", "label*", "limit", "all!", "oldest-first!"}},
      {"cancel",
       "ID",
       "cancel a job that has not finished",
       "  --reason TEXT          stored as the job's last error\n"
       "Example:\n  ferry cancel 42 --reason 'customer left'\n",
       {"reason"}},
      {"retry",
       "ID",
       "put a FAILED or CANCELLED job back in its queue",
       "Example:\n  ferry retry 42\n",
       {}},
      {"queues",
       "",
       "job counts per state and oldest waiting job, per queue",
       "Example:\n  ferry queues\n",
       {}},
      {"pause",
       "QUEUE",
       "stop handing out a queue's jobs (submits still work)",
       "Example:\n  ferry pause emails\n",
       {}},
      {"resume",
       "QUEUE",
       "resume a paused queue",
       "Example:\n  ferry resume emails\n",
       {}},
      {"purge",
       "QUEUE",
       "delete every job of one state in a queue",
       "  --state S              required: scheduled, queued, succeeded, "
       "failed or cancelled\n"
       "Example:\n  ferry purge emails --state failed\n",
       {"state"}},
      {"workers",
       "",
       "connected workers, their queues, credits and leases",
       "Example:\n  ferry workers\n",
       {}},
  };
  return *commands;
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& command : Commands()) {
    if (name == command.name) return &command;
  }
  return nullptr;
}

void PrintUsage(std::ostream& out) {
  out << "Usage: ferry [--broker HOST:PORT] [--json] COMMAND [ARGS...]\n\n"
         "Commands:\n";
  for (const Command& command : Commands()) {
    std::string head = absl::StrCat(command.name, " ", command.args);
    out << "  " << head
        << std::string(head.size() < 16 ? 16 - head.size() : 1, ' ')
        << command.summary << "\n";
  }
  out << "\nGlobal options:\n"
         "  --broker HOST:PORT     ferryd's address (default $FERRY_BROKER, "
         "else "
      << kDefaultBrokerAddress
      << ")\n"
         "  --json                 print the broker's response as JSON\n"
         "  --call-timeout D       deadline of each call (default 10s)\n\n"
         "Global options may also follow the command. 'ferry help COMMAND' "
         "or\n'ferry COMMAND --help' shows a command's options.\n"
         "Exit codes: 0 ok, 1 refused by the broker, 2 usage, 3 not found, "
         "4 broker unreachable,\n"
         "            5 job failed or cancelled, 6 wait timed out.\n";
}

void PrintCommandUsage(const Command& command, std::ostream& out) {
  out << "Usage: ferry " << command.name << (command.args[0] != '\0' ? " " : "")
      << command.args << (command.options.empty() ? "" : " [options]") << "\n"
      << command.summary << ".\n"
      << command.details;
}

// ------------------------------------------------------------- parsing

struct Parsed {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> values;
  bool Has(const std::string& name) const { return values.count(name) > 0; }
  std::string Get(const std::string& name) const {
    auto it = values.find(name);
    return it == values.end() ? "" : it->second.back();
  }
};

struct UsageError {
  std::string message;
};

// Accepts --name=value, --name value and switches; options and positional
// arguments may mix. `spec` uses the Command::options syntax.
std::optional<UsageError> ParseArgs(const std::vector<std::string>& args,
                                    size_t begin,
                                    const std::vector<std::string>& spec,
                                    Parsed* parsed) {
  for (size_t i = begin; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      for (++i; i < args.size(); ++i) parsed->positional.push_back(args[i]);
      break;
    }
    if (!absl::StartsWith(arg, "--") || arg == "-") {
      parsed->positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const std::string* found = nullptr;
    for (const std::string& option : spec) {
      std::string bare = option;
      if (!bare.empty() && (bare.back() == '!' || bare.back() == '*')) {
        bare.pop_back();
      }
      if (bare == name) found = &option;
    }
    if (found == nullptr)
      return UsageError{absl::StrCat("unknown option --", name)};
    const bool is_switch = found->back() == '!';
    const bool repeats = found->back() == '*';
    if (is_switch) {
      if (value) return UsageError{absl::StrCat("--", name, " takes no value")};
      value = "true";
    } else if (!value) {
      if (i + 1 >= args.size()) {
        return UsageError{absl::StrCat("--", name, " needs a value")};
      }
      value = args[++i];
    }
    std::vector<std::string>& values = parsed->values[name];
    if (!repeats && !values.empty()) {
      return UsageError{absl::StrCat("--", name, " given twice")};
    }
    values.push_back(*value);
  }
  return std::nullopt;
}

std::optional<absl::Duration> ParseDurationFlag(const std::string& text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration()) {
    return std::nullopt;
  }
  return d;
}

std::optional<v1::JobState> ParseState(std::string text) {
  text = absl::AsciiStrToUpper(text);
  if (!absl::StartsWith(text, "JOB_STATE_")) text = "JOB_STATE_" + text;
  v1::JobState state;
  if (!v1::JobState_Parse(text, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
    return std::nullopt;
  }
  return state;
}

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  if (absl::StartsWith(name, "JOB_STATE_")) name = name.substr(10);
  return name;
}

// k=v into `labels`.
std::optional<UsageError> ParseLabels(
    const std::vector<std::string>& items,
    std::map<std::string, std::string>* labels) {
  for (const std::string& item : items) {
    absl::StatusOr<std::pair<std::string, std::string>> label =
        ParseLabelFlag(item);
    if (!label.ok()) return UsageError{std::string(label.status().message())};
    (*labels)[label->first] = std::move(label->second);
  }
  return std::nullopt;
}

// ------------------------------------------------------------- output

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

bool IsText(const std::string& bytes) {
  for (unsigned char c : bytes) {
    if ((c < 0x20 && c != '\n' && c != '\t' && c != '\r') || c == 0x7f) {
      return false;
    }
  }
  return true;
}

std::string FormatTime(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", FromProto(t),
                          absl::UTCTimeZone());
}

std::string FormatAge(absl::Duration d) {
  if (d <= absl::ZeroDuration()) return "-";
  if (d < absl::Seconds(1))
    return absl::StrCat(absl::ToInt64Milliseconds(d), "ms");
  if (d < absl::Minutes(2)) return absl::StrCat(absl::ToInt64Seconds(d), "s");
  if (d < absl::Hours(2)) return absl::StrCat(absl::ToInt64Minutes(d), "m");
  if (d < absl::Hours(48)) return absl::StrCat(absl::ToInt64Hours(d), "h");
  return absl::StrCat(absl::ToInt64Hours(d) / 24, "d");
}

// Left-aligned columns, two spaces apart.
void PrintTable(const std::vector<std::vector<std::string>>& rows,
                std::ostream& out) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

std::string Labels(
    const google::protobuf::Map<std::string, std::string>& labels) {
  std::map<std::string, std::string> sorted(labels.begin(), labels.end());
  return absl::StrJoin(sorted, ",", absl::PairFormatter("="));
}

void PrintJob(const v1::Job& job, std::ostream& out) {
  std::vector<std::vector<std::string>> rows = {
      {"id:", job.id()},
      {"queue:", job.queue()},
      {"kind:", job.kind()},
      {"state:", StateName(job.state())},
      {"attempt:",
       absl::StrCat(job.attempt(), " of ", job.retry().max_attempts())},
      {"priority:", absl::StrCat(job.priority())},
      {"created:", FormatTime(job.created_at())},
      {"run at:", FormatTime(job.run_at())},
      {"started:", FormatTime(job.started_at())},
      {"finished:", FormatTime(job.finished_at())},
  };
  if (!job.worker_id().empty()) rows.push_back({"worker:", job.worker_id()});
  if (job.state() == v1::JOB_STATE_RUNNING) {
    rows.push_back({"lease until:", FormatTime(job.lease_deadline())});
  }
  if (job.has_progress()) {
    rows.push_back({"progress:", absl::StrCat(job.progress().percent(), "% ",
                                              job.progress().message())});
  }
  if (!job.labels().empty()) rows.push_back({"labels:", Labels(job.labels())});
  if (!job.idempotency_key().empty()) {
    rows.push_back({"idempotency key:", job.idempotency_key()});
  }
  if (!job.last_error().empty())
    rows.push_back({"last error:", job.last_error()});
  auto bytes = [](const std::string& data) {
    if (data.empty()) return std::string("(empty)");
    if (IsText(data)) return data;
    return absl::StrCat("(", data.size(), " bytes, not text; use --json)");
  };
  if (!job.content_type().empty())
    rows.push_back({"content type:", job.content_type()});
  rows.push_back({"payload:", bytes(job.payload())});
  if (job.state() == v1::JOB_STATE_SUCCEEDED) {
    rows.push_back({"result:", bytes(job.result())});
  }
  PrintTable(rows, out);
}

// ------------------------------------------------------------ running

// Whether an UNAVAILABLE came from gRPC failing to reach the broker (as
// opposed to the broker answering it: a failing disk, a shutdown), going by
// the messages gRPC 1.51 gives.
bool NoConnection(absl::string_view message) {
  for (absl::string_view sign :
       {"failed to connect", "Failed to connect", "DNS resolution failed",
        "Connection refused", "Connection reset", "Socket closed",
        "Broken pipe", "No route to host"}) {
    if (absl::StrContains(message, sign)) return true;
  }
  return false;
}

class Cli {
 public:
  Cli(std::string broker, bool json, absl::Duration call_timeout,
      std::ostream& out, std::ostream& err)
      : client_(ClientOptions{broker, call_timeout, nullptr}),
        json_(json),
        out_(out),
        err_(err) {}

  int Run(const Command& command, const Parsed& p);

 private:
  // Prints the broker's error and returns the exit code for it.
  int Fail(const absl::Status& status) {
    err_ << "ferry: " << status.message() << "\n";
    if (absl::IsUnavailable(status) && NoConnection(status.message())) {
      err_ << "ferry: is ferryd running there? Set --broker HOST:PORT or "
              "FERRY_BROKER.\n";
    } else if (absl::IsDeadlineExceeded(status)) {
      err_ << "ferry: no answer within --call-timeout; the request may "
              "still have been carried out (check before repeating it).\n";
    }
    switch (status.code()) {
      case absl::StatusCode::kNotFound:
        return kExitNotFound;
      case absl::StatusCode::kUnavailable:
      case absl::StatusCode::kDeadlineExceeded:
        return kExitUnreachable;
      case absl::StatusCode::kInvalidArgument:
        return kExitUsage;
      default:
        return kExitError;
    }
  }
  int Usage(const Command& command, const std::string& message) {
    err_ << "ferry " << command.name << ": " << message << "\n";
    PrintCommandUsage(command, err_);
    return kExitUsage;
  }
  // Prints the outcome of a finished (or timed out) job; its exit code.
  int Outcome(const v1::Job& job, bool done) {
    if (json_) {
      v1::WaitResponse response;
      *response.mutable_job() = job;
      response.set_done(done);
      out_ << ToJson(response) << "\n";
    }
    if (!done) {
      err_ << "ferry: job " << job.id() << " is still "
           << StateName(job.state()) << " after the wait timeout\n";
      return kExitWaitTimeout;
    }
    if (job.state() == v1::JOB_STATE_SUCCEEDED) {
      if (!json_) out_ << job.result();
      return kExitOk;
    }
    err_ << "ferry: job " << job.id() << " " << StateName(job.state());
    if (!job.last_error().empty()) err_ << ": " << job.last_error();
    err_ << "\n";
    return kExitJobFailed;
  }
  int WaitFor(const std::string& id, absl::Duration timeout);

  int Submit(const Command& command, const Parsed& p);
  int List(const Command& command, const Parsed& p);

  Client client_;
  const bool json_;
  std::ostream& out_;
  std::ostream& err_;
};

int Cli::WaitFor(const std::string& id, absl::Duration timeout) {
  // The broker holds one Wait for at most an hour; longer waits loop.
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const absl::Duration left =
        std::max(absl::ZeroDuration(), deadline - absl::Now());
    absl::StatusOr<v1::WaitResponse> waited =
        client_.Wait(id, std::min(left, absl::Hours(1)));
    if (!waited.ok()) return Fail(waited.status());
    if (waited->done() || left <= absl::Hours(1)) {
      return Outcome(waited->job(), waited->done());
    }
  }
}

int Cli::Submit(const Command& command, const Parsed& p) {
  if (p.positional.size() != 1) return Usage(command, "expected one QUEUE");
  SubmitOptions options;
  options.queue = p.positional[0];
  options.kind = p.Has("kind") ? p.Get("kind") : "default";
  options.content_type = p.Get("content-type");
  options.idempotency_key = p.Get("idempotency-key");
  if (p.Has("payload") && p.Has("payload-file")) {
    return Usage(command, "give --payload or --payload-file, not both");
  }
  options.payload = p.Get("payload");
  if (p.Has("payload-file")) {
    const std::string file = p.Get("payload-file");
    absl::StatusOr<std::string> payload =
        ReadFileToString(file == "-" ? "/dev/stdin" : file);
    if (!payload.ok())
      return Usage(command, std::string(payload.status().message()));
    options.payload = *std::move(payload);
  }
  if (p.Has("priority") &&
      !absl::SimpleAtoi(p.Get("priority"), &options.priority)) {
    return Usage(command, "--priority wants an integer");
  }
  if (p.Has("delay") && p.Has("at"))
    return Usage(command, "give --delay or --at, not both");
  if (p.Has("delay")) {
    options.delay = ParseDurationFlag(p.Get("delay"));
    if (!options.delay)
      return Usage(command, "--delay wants a duration like 30s, 5m, 2h");
  }
  if (p.Has("at")) {
    absl::Time at;
    std::string error;
    if (!absl::ParseTime(absl::RFC3339_full, p.Get("at"), &at, &error)) {
      return Usage(
          command,
          absl::StrCat("--at wants RFC 3339 (2026-01-02T15:04:05Z): ", error));
    }
    options.run_at = at;
  }
  if (p.Has("max-attempts") &&
      (!absl::SimpleAtoi(p.Get("max-attempts"), &options.max_attempts) ||
       options.max_attempts == 0)) {
    return Usage(command, "--max-attempts wants a positive integer");
  }
  for (const char* name : {"timeout", "lease-ttl"}) {
    if (!p.Has(name)) continue;
    std::optional<absl::Duration> d = ParseDurationFlag(p.Get(name));
    if (!d)
      return Usage(command,
                   absl::StrCat("--", name, " wants a duration like 30s"));
    (std::string(name) == "timeout" ? options.timeout : options.lease_ttl) = d;
  }
  if (p.Has("label")) {
    if (auto error = ParseLabels(p.values.at("label"), &options.labels)) {
      return Usage(command, error->message);
    }
  }
  absl::Duration wait_timeout = absl::Hours(1);
  if (p.Has("wait-timeout") && !p.Has("wait")) {
    return Usage(command, "--wait-timeout goes with --wait");
  }
  if (p.Has("wait-timeout")) {
    std::optional<absl::Duration> d = ParseDurationFlag(p.Get("wait-timeout"));
    if (!d) return Usage(command, "--wait-timeout wants a duration");
    wait_timeout = *d;
  }
  absl::StatusOr<SubmitResult> result = client_.Submit(options);
  if (!result.ok()) return Fail(result.status());
  if (p.Has("wait")) {
    if (!json_) {
      err_ << "job " << result->job.id()
           << (result->created ? " submitted"
                               : " (existing, same idempotency key)")
           << ", waiting\n";
    }
    return WaitFor(result->job.id(), wait_timeout);
  }
  if (json_) {
    v1::SubmitResponse response;
    *response.mutable_job() = result->job;
    response.set_created(result->created);
    out_ << ToJson(response) << "\n";
  } else {
    out_ << result->job.id() << "\n";
    if (!result->created) {
      err_ << "job " << result->job.id()
           << " already exists with this idempotency key; nothing new was "
              "submitted\n";
    }
  }
  return kExitOk;
}

int Cli::List(const Command& command, const Parsed& p) {
  if (!p.positional.empty())
    return Usage(command, "takes no positional arguments");
  v1::ListRequest request;
  request.set_queue(p.Get("queue"));
  request.set_kind(p.Get("kind"));
  request.set_oldest_first(p.Has("oldest-first"));
  if (p.Has("state")) {
    std::optional<v1::JobState> state = ParseState(p.Get("state"));
    if (!state)
      return Usage(command, absl::StrCat("unknown state ", p.Get("state")));
    request.set_state(*state);
  }
  if (p.Has("label")) {
    std::map<std::string, std::string> labels;
    if (auto error = ParseLabels(p.values.at("label"), &labels)) {
      return Usage(command, error->message);
    }
    request.mutable_labels()->insert(labels.begin(), labels.end());
  }
  int64_t limit = 20;
  if (p.Has("limit") &&
      (!absl::SimpleAtoi(p.Get("limit"), &limit) || limit <= 0)) {
    return Usage(command, "--limit wants a positive integer");
  }
  const bool all = p.Has("all");
  v1::ListResponse combined;
  while (true) {
    const int64_t want = all ? 1000 : limit - combined.jobs_size();
    request.set_page_size(static_cast<uint32_t>(std::min<int64_t>(want, 1000)));
    absl::StatusOr<v1::ListResponse> page = client_.List(request);
    if (!page.ok()) return Fail(page.status());
    for (v1::Job& job : *page->mutable_jobs())
      *combined.add_jobs() = std::move(job);
    combined.set_next_page_token(page->next_page_token());
    if (page->next_page_token().empty()) break;
    if (!all && combined.jobs_size() >= limit) break;
    request.set_page_token(page->next_page_token());
  }
  if (json_) {
    out_ << ToJson(combined) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"ID", "QUEUE", "KIND", "STATE",
                                                 "ATTEMPT", "CREATED", "WORKER",
                                                 "LAST ERROR"}};
  for (const v1::Job& job : combined.jobs()) {
    rows.push_back(
        {job.id(), job.queue(), job.kind(), StateName(job.state()),
         absl::StrCat(job.attempt(), "/", job.retry().max_attempts()),
         FormatTime(job.created_at()),
         job.worker_id().empty() ? "-" : job.worker_id(),
         OneLine(job.last_error()).substr(0, 60)});
  }
  PrintTable(rows, out_);
  if (!combined.next_page_token().empty() && !all) {
    err_ << "(more jobs: raise --limit or use --all)\n";
  }
  return kExitOk;
}

int Cli::Run(const Command& command, const Parsed& p) {
  const std::string name = command.name;
  if (name == "submit") return Submit(command, p);
  if (name == "list") return List(command, p);
  if (name == "queues" || name == "workers") {
    if (!p.positional.empty()) return Usage(command, "takes no arguments");
  } else if (p.positional.size() != 1) {
    return Usage(command, absl::StrCat("expected one ", command.args));
  }
  const std::string arg = p.positional.empty() ? "" : p.positional[0];
  if (name == "get") {
    absl::StatusOr<v1::Job> job = client_.Get(arg);
    if (!job.ok()) return Fail(job.status());
    if (json_) {
      out_ << ToJson(*job) << "\n";
    } else {
      PrintJob(*job, out_);
    }
    return kExitOk;
  }
  if (name == "wait") {
    absl::Duration timeout = absl::Hours(1);
    if (p.Has("timeout")) {
      std::optional<absl::Duration> d = ParseDurationFlag(p.Get("timeout"));
      if (!d) return Usage(command, "--timeout wants a duration like 30s");
      timeout = *d;
    }
    return WaitFor(arg, timeout);
  }
  if (name == "watch") {
    v1::Job last;
    absl::Status status = client_.Watch(arg, [&](const v1::Job& job) {
      last = job;
      if (json_) {
        v1::WatchResponse response;
        *response.mutable_job() = job;
        out_ << ToJson(response) << std::endl;
        return true;
      }
      std::string line =
          absl::StrCat(FormatTime(job.updated_at()), " job ", job.id(), " ",
                       StateName(job.state()), " attempt=", job.attempt());
      if (!job.worker_id().empty())
        absl::StrAppend(&line, " worker=", job.worker_id());
      if (job.has_progress()) {
        absl::StrAppend(&line, " progress=", job.progress().percent(), "%");
        if (!job.progress().message().empty()) {
          absl::StrAppend(&line, " \"", job.progress().message(), "\"");
        }
      }
      if (!job.last_error().empty())
        absl::StrAppend(&line, " error=\"", OneLine(job.last_error()), "\"");
      out_ << line << std::endl;
      return true;
    });
    if (!status.ok()) return Fail(status);
    if (last.state() == v1::JOB_STATE_FAILED ||
        last.state() == v1::JOB_STATE_CANCELLED) {
      return kExitJobFailed;
    }
    return kExitOk;
  }
  if (name == "cancel" || name == "retry") {
    absl::StatusOr<v1::Job> job = name == "cancel"
                                      ? client_.Cancel(arg, p.Get("reason"))
                                      : client_.Retry(arg);
    if (!job.ok()) return Fail(job.status());
    if (json_) {
      out_ << ToJson(*job) << "\n";
    } else {
      out_ << "job " << job->id() << " " << StateName(job->state()) << "\n";
    }
    return kExitOk;
  }
  if (name == "pause" || name == "resume") {
    absl::Status status =
        name == "pause" ? client_.PauseQueue(arg) : client_.ResumeQueue(arg);
    if (!status.ok()) return Fail(status);
    if (json_) {
      out_ << "{}\n";
    } else {
      out_ << "queue " << arg << (name == "pause" ? " paused" : " resumed")
           << "\n";
    }
    return kExitOk;
  }
  if (name == "purge") {
    if (!p.Has("state")) return Usage(command, "--state is required");
    std::optional<v1::JobState> state = ParseState(p.Get("state"));
    if (!state)
      return Usage(command, absl::StrCat("unknown state ", p.Get("state")));
    absl::StatusOr<uint64_t> purged = client_.PurgeQueue(arg, *state);
    if (!purged.ok()) return Fail(purged.status());
    if (json_) {
      v1::PurgeQueueResponse response;
      response.set_purged(*purged);
      out_ << ToJson(response) << "\n";
    } else {
      out_ << "purged " << *purged << " " << StateName(*state) << " jobs from "
           << arg << "\n";
    }
    return kExitOk;
  }
  if (name == "queues") {
    absl::StatusOr<std::vector<v1::QueueInfo>> queues = client_.QueueStats();
    if (!queues.ok()) return Fail(queues.status());
    if (json_) {
      v1::QueueStatsResponse response;
      for (const v1::QueueInfo& q : *queues) *response.add_queues() = q;
      out_ << ToJson(response) << "\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {
        {"QUEUE", "SCHEDULED", "QUEUED", "RUNNING", "SUCCEEDED", "FAILED",
         "CANCELLED", "OLDEST"}};
    for (const v1::QueueInfo& q : *queues) {
      rows.push_back({q.paused() ? q.name() + " (paused)" : q.name(),
                      absl::StrCat(q.scheduled()), absl::StrCat(q.queued()),
                      absl::StrCat(q.running()), absl::StrCat(q.succeeded()),
                      absl::StrCat(q.failed()), absl::StrCat(q.cancelled()),
                      FormatAge(FromProto(q.oldest_queued_age()))});
    }
    PrintTable(rows, out_);
    return kExitOk;
  }
  if (name == "workers") {
    absl::StatusOr<std::vector<v1::WorkerInfo>> workers = client_.ListWorkers();
    if (!workers.ok()) return Fail(workers.status());
    if (json_) {
      v1::ListWorkersResponse response;
      for (const v1::WorkerInfo& w : *workers) *response.add_workers() = w;
      out_ << ToJson(response) << "\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {
        {"WORKER", "HOST", "QUEUES", "CREDITS", "LEASES", "CONNECTED",
         "LAST SEEN", "PEER"}};
    for (const v1::WorkerInfo& w : *workers) {
      rows.push_back({w.worker_id(), w.hostname().empty() ? "-" : w.hostname(),
                      absl::StrJoin(w.queues(), ","), absl::StrCat(w.credits()),
                      absl::StrCat(w.leases()), FormatTime(w.connected_at()),
                      FormatTime(w.last_seen()), w.peer()});
    }
    PrintTable(rows, out_);
    return kExitOk;
  }
  return Usage(command, "not implemented");
}

// --broker: a non-empty HOST:PORT.
bool SetBroker(const std::optional<std::string>& value, std::string* broker,
               std::ostream& err) {
  if (!value || value->empty()) {
    err << "ferry: --broker wants HOST:PORT\n";
    return false;
  }
  *broker = *value;
  return true;
}

// --call-timeout: a finite duration above zero.
bool SetCallTimeout(const std::optional<std::string>& value,
                    absl::Duration* timeout, std::ostream& err) {
  std::optional<absl::Duration> d =
      value ? ParseDurationFlag(*value) : std::nullopt;
  if (!d || *d <= absl::ZeroDuration() || *d == absl::InfiniteDuration()) {
    err << "ferry: --call-timeout wants a duration like 10s\n";
    return false;
  }
  *timeout = *d;
  return true;
}

}  // namespace

int RunCli(const std::vector<std::string>& args,
           const std::string& default_broker, std::ostream& out,
           std::ostream& err) {
  // Global options before the command; after it, ParseArgs takes them.
  std::string broker = default_broker;
  bool json = false;
  absl::Duration call_timeout = absl::Seconds(10);
  size_t i = 0;
  for (; i < args.size() && absl::StartsWith(args[i], "--"); ++i) {
    const std::string& arg = args[i];
    auto value = [&](const std::string& name) -> std::optional<std::string> {
      if (absl::StartsWith(arg, name + "=")) return arg.substr(name.size() + 1);
      if (arg == name && i + 1 < args.size()) return args[++i];
      return std::nullopt;
    };
    const auto is = [&arg](absl::string_view name) {
      return arg == name || absl::StartsWith(arg, absl::StrCat(name, "="));
    };
    if (arg == "--json") {
      json = true;
    } else if (arg == "--help" || arg == "-h") {
      PrintUsage(out);
      return kExitOk;
    } else if (is("--broker")) {
      if (!SetBroker(value("--broker"), &broker, err)) return kExitUsage;
    } else if (is("--call-timeout")) {
      if (!SetCallTimeout(value("--call-timeout"), &call_timeout, err)) {
        return kExitUsage;
      }
    } else {
      err << "ferry: unknown global option " << arg << "\n";
      PrintUsage(err);
      return kExitUsage;
    }
  }
  if (i == args.size()) {
    PrintUsage(err);
    return kExitUsage;
  }
  const std::string name = args[i];
  if (name == "help") {
    if (i + 1 < args.size()) {
      const Command* command = FindCommand(args[i + 1]);
      if (command == nullptr) {
        err << "ferry: unknown command " << args[i + 1] << "\n";
        return kExitUsage;
      }
      PrintCommandUsage(*command, out);
    } else {
      PrintUsage(out);
    }
    return kExitOk;
  }
  const Command* command = FindCommand(name);
  if (command == nullptr) {
    err << "ferry: unknown command \"" << name << "\"\n";
    PrintUsage(err);
    return kExitUsage;
  }
  // `ferry get -h`: help, not job "-h".
  if (i + 1 < args.size() && args[i + 1] == "-h") {
    PrintCommandUsage(*command, out);
    return kExitOk;
  }
  // The global options may also come after the command.
  std::vector<std::string> spec = command->options;
  spec.push_back("help!");
  spec.push_back("json!");
  spec.push_back("broker");
  spec.push_back("call-timeout");
  Parsed parsed;
  if (auto error = ParseArgs(args, i + 1, spec, &parsed)) {
    err << "ferry " << name << ": " << error->message << "\n";
    PrintCommandUsage(*command, err);
    return kExitUsage;
  }
  if (parsed.Has("help")) {
    PrintCommandUsage(*command, out);
    return kExitOk;
  }
  if (parsed.Has("json")) json = true;
  if (parsed.Has("broker") && !SetBroker(parsed.Get("broker"), &broker, err)) {
    return kExitUsage;
  }
  if (parsed.Has("call-timeout") &&
      !SetCallTimeout(parsed.Get("call-timeout"), &call_timeout, err)) {
    return kExitUsage;
  }
  Cli cli(broker, json, call_timeout, out, err);
  return cli.Run(*command, parsed);
}

}  // namespace ferry
