#include "client/cli.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "base/broker_address.h"
#include "base/read_file.h"
#include "client/cli_flags.h"
#include "client/client.h"
#include "client/connect.h"
#include "client/token_file.h"
#include "google/protobuf/util/json_util.h"
#include "proto/protocol_limits.h"
#include "proto/time_util.h"

namespace ferry {
namespace {

// A last error is often the end of a command's stderr, several lines: one
// line per job in tables and watch output, the breaks shown as " | ".
std::string OneLine(absl::string_view text) {
  return absl::StrJoin(
      absl::StrSplit(absl::StripTrailingAsciiWhitespace(text), '\n'), " | ");
}

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  if (absl::StartsWith(name, "JOB_STATE_")) name = name.substr(10);
  return name;
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

// What to tell someone whose call failed UNAVAILABLE during the TLS
// handshake, or at its start where TLS may be the reason ("" if nothing);
// `tls`: whether TLS was configured. Goes by gRPC 1.51's messages.
std::string TlsHint(absl::string_view message, bool tls) {
  const bool dropped = absl::StrContains(message, "Socket closed") ||
                       absl::StrContains(message, "Connection reset");
  if (!tls) {
    // A TLS broker drops a plaintext client's connection at once.
    return dropped
               ? "if ferryd uses TLS, pass --tls_ca FILE (or set FERRY_TLS_CA)"
               : "";
  }
  if (absl::StrContains(message, "wrong version number")) {
    return "the broker does not answer in TLS: it may not use TLS (then "
           "drop --tls_ca and FERRY_TLS_CA), or --broker is not ferryd";
  }
  if (absl::StrContains(message, "Peer name")) {
    return "ferryd's certificate does not carry the host in --broker: set "
           "--tls_server_name (or FERRY_TLS_SERVER_NAME) to a name it has";
  }
  if (absl::StrContains(message, "Ssl handshake failed") ||
      absl::StrContains(message, "Handshake")) {
    return "the TLS handshake failed: check that --tls_ca is the CA that "
           "signed ferryd's certificate and that the certificate is valid "
           "now, or set --tls_server_name to a name it carries";
  }
  if (dropped) {
    return "ferryd closed the connection in the TLS handshake: it may want "
           "a client certificate it trusts (--tls_cert and --tls_key)";
  }
  return "";
}

bool IsTlsHandshakeFailure(absl::string_view message) {
  return absl::StrContains(message, "Ssl handshake failed") ||
         absl::StrContains(message, "Peer name");
}

// ------------------------------------------------------------ commands

struct Command;
void PrintCommandUsage(const Command& command, std::ostream& out);
// "ferry COMMAND: MESSAGE" and the command's usage on `err`; the exit code.
int UsageError(const Command& command, absl::string_view message,
               std::ostream& err);

// What a command's run function works with: the broker, the streams, and
// the ways a command ends (Fail, Usage, Outcome).
class Cli {
 public:
  // `options` null: the command does not talk to the broker (client() must
  // not be called).
  Cli(const Command& command, const ClientOptions* options, bool json,
      std::ostream& out, std::ostream& err)
      : command_(command),
        client_(options == nullptr ? nullptr
                                   : std::make_unique<Client>(*options)),
        tls_(options != nullptr && options->connect.tls()),
        has_token_(options != nullptr && options->connect.has_token()),
        json_(json),
        out_(out),
        err_(err) {}

  Client& client() { return *client_; }
  bool json() const { return json_; }
  std::ostream& out() { return out_; }
  std::ostream& err() { return err_; }

  // With --json, prints `message` and returns true; else returns false.
  bool PrintedJson(const google::protobuf::Message& message) {
    if (!json_) return false;
    out_ << ToJson(message) << "\n";
    return true;
  }

  // Prints the broker's error and returns the exit code for it.
  int Fail(const absl::Status& status) {
    err_ << "ferry: " << status.message() << "\n";
    if (absl::IsUnavailable(status)) {
      // A failed handshake means ferryd is there: no "is it running?".
      if (NoConnection(status.message()) &&
          !(tls_ && IsTlsHandshakeFailure(status.message()))) {
        err_ << "ferry: is ferryd running there? Set --broker HOST:PORT or "
                "FERRY_BROKER.\n";
      }
      if (std::string hint = TlsHint(status.message(), tls_); !hint.empty()) {
        err_ << "ferry: " << hint << "\n";
      }
    } else if (absl::IsUnauthenticated(status)) {
      err_ << (has_token_
                   ? "ferry: the broker does not know this token (revoked? "
                     "made for another broker?)\n"
                   : "ferry: the broker needs a token: pass --token_file "
                     "FILE or set FERRY_TOKEN (or FERRY_TOKEN_FILE)\n");
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
      default:  // UNAUTHENTICATED and PERMISSION_DENIED too: refused
        return kExitError;
    }
  }

  // A usage error of this command: the message, then its usage.
  int Usage(absl::string_view message);

  // Prints the outcome of a finished (or timed out) job; its exit code.
  int Outcome(const v1::Job& job, bool done) {
    v1::WaitResponse response;
    *response.mutable_job() = job;
    response.set_done(done);
    PrintedJson(response);
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

  int WaitFor(const std::string& id, absl::Duration timeout) {
    // The broker holds one Wait for at most kMaxWait; longer waits loop.
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const absl::Duration left =
          std::max(absl::ZeroDuration(), deadline - absl::Now());
      absl::StatusOr<v1::WaitResponse> waited =
          client_->Wait(id, std::min(left, kMaxWait));
      if (!waited.ok()) return Fail(waited.status());
      if (waited->done() || left <= kMaxWait) {
        return Outcome(waited->job(), waited->done());
      }
    }
  }

 private:
  const Command& command_;
  const std::unique_ptr<Client> client_;
  const bool tls_;        // TLS was configured
  const bool has_token_;  // a token was given
  const bool json_;
  std::ostream& out_;
  std::ostream& err_;
};

// One `ferry` command: what `ferry help` says of it, the flags it takes,
// and the function that runs it once its arguments have been checked.
struct Command {
  const char* name;
  // The positional argument ("ID", "QUEUE"); "" for none. RunCli makes sure
  // a command gets exactly one, or none, before it runs.
  const char* arg;
  const char* summary;  // one line
  std::vector<Flag> flags;
  const char* details;  // notes and examples, after the options
  int (*run)(Cli& cli, const ParsedArgs& p);
  // Works on local files only: no broker, so no TLS or token is read.
  bool local = false;
};

int Cli::Usage(absl::string_view message) {
  return UsageError(command_, message, err_);
}

int Submit(Cli& cli, const ParsedArgs& p) {
  SubmitOptions options;
  options.queue = p.positional[0];
  options.kind = p.Has("kind") ? p.Get("kind") : "default";
  options.content_type = p.Get("content-type");
  options.idempotency_key = p.Get("idempotency-key");
  if (p.Has("payload") && p.Has("payload-file")) {
    return cli.Usage("give --payload or --payload-file, not both");
  }
  options.payload = p.Get("payload");
  if (p.Has("payload-file")) {
    const std::string file = p.Get("payload-file");
    absl::StatusOr<std::string> payload =
        ReadFileToString(file == "-" ? "/dev/stdin" : file);
    if (!payload.ok()) return cli.Usage(payload.status().message());
    options.payload = *std::move(payload);
  }
  options.priority = static_cast<int32_t>(p.Int("priority", 0));
  if (p.Has("delay") && p.Has("at")) {
    return cli.Usage("give --delay or --at, not both");
  }
  options.delay = p.Duration("delay");
  options.run_at = p.Time("at");
  options.max_attempts = static_cast<uint32_t>(p.Int("max-attempts", 0));
  options.timeout = p.Duration("timeout");
  options.lease_ttl = p.Duration("lease-ttl");
  options.labels = p.Labels("label");
  if (p.Has("wait-timeout") && !p.Has("wait")) {
    return cli.Usage("--wait-timeout goes with --wait");
  }
  absl::StatusOr<SubmitResult> result = cli.client().Submit(options);
  if (!result.ok()) return cli.Fail(result.status());
  if (p.Has("wait")) {
    if (!cli.json()) {
      cli.err() << "job " << result->job.id()
                << (result->created ? " submitted"
                                    : " (existing, same idempotency key)")
                << ", waiting\n";
    }
    return cli.WaitFor(result->job.id(),
                       p.Duration("wait-timeout").value_or(absl::Hours(1)));
  }
  v1::SubmitResponse response;
  *response.mutable_job() = result->job;
  response.set_created(result->created);
  if (cli.PrintedJson(response)) return kExitOk;
  cli.out() << result->job.id() << "\n";
  if (!result->created) {
    cli.err() << "job " << result->job.id()
              << " already exists with this idempotency key; nothing new was "
                 "submitted\n";
  }
  return kExitOk;
}

int Get(Cli& cli, const ParsedArgs& p) {
  absl::StatusOr<v1::Job> job = cli.client().Get(p.positional[0]);
  if (!job.ok()) return cli.Fail(job.status());
  if (!cli.PrintedJson(*job)) PrintJob(*job, cli.out());
  return kExitOk;
}

int Wait(Cli& cli, const ParsedArgs& p) {
  return cli.WaitFor(p.positional[0],
                     p.Duration("timeout").value_or(absl::Hours(1)));
}

int Watch(Cli& cli, const ParsedArgs& p) {
  v1::Job last;
  absl::Status status =
      cli.client().Watch(p.positional[0], [&](const v1::Job& job) {
        last = job;
        if (cli.json()) {
          v1::WatchResponse response;
          *response.mutable_job() = job;
          cli.out() << ToJson(response) << std::endl;
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
        cli.out() << line << std::endl;
        return true;
      });
  if (!status.ok()) return cli.Fail(status);
  if (last.state() == v1::JOB_STATE_FAILED ||
      last.state() == v1::JOB_STATE_CANCELLED) {
    return kExitJobFailed;
  }
  return kExitOk;
}

int List(Cli& cli, const ParsedArgs& p) {
  v1::ListRequest request;
  request.set_queue(p.Get("queue"));
  request.set_kind(p.Get("kind"));
  request.set_oldest_first(p.Has("oldest-first"));
  if (std::optional<v1::JobState> state = p.State("state")) {
    request.set_state(*state);
  }
  const std::map<std::string, std::string> labels = p.Labels("label");
  request.mutable_labels()->insert(labels.begin(), labels.end());
  const int64_t limit = p.Int("limit", 20);
  const bool all = p.Has("all");
  v1::ListResponse combined;
  while (true) {
    const int64_t want = all ? kMaxPageSize : limit - combined.jobs_size();
    request.set_page_size(
        static_cast<uint32_t>(std::min<int64_t>(want, kMaxPageSize)));
    absl::StatusOr<v1::ListResponse> page = cli.client().List(request);
    if (!page.ok()) return cli.Fail(page.status());
    for (v1::Job& job : *page->mutable_jobs())
      *combined.add_jobs() = std::move(job);
    combined.set_next_page_token(page->next_page_token());
    if (page->next_page_token().empty()) break;
    if (!all && combined.jobs_size() >= limit) break;
    request.set_page_token(page->next_page_token());
  }
  if (cli.PrintedJson(combined)) return kExitOk;
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
  PrintTable(rows, cli.out());
  if (!combined.next_page_token().empty() && !all) {
    cli.err() << "(more jobs: raise --limit or use --all)\n";
  }
  return kExitOk;
}

// Cancel and retry: the job where it is now.
int PrintMoved(Cli& cli, const absl::StatusOr<v1::Job>& job) {
  if (!job.ok()) return cli.Fail(job.status());
  if (!cli.PrintedJson(*job)) {
    cli.out() << "job " << job->id() << " " << StateName(job->state()) << "\n";
  }
  return kExitOk;
}

int Cancel(Cli& cli, const ParsedArgs& p) {
  return PrintMoved(cli, cli.client().Cancel(p.positional[0], p.Get("reason")));
}

int Retry(Cli& cli, const ParsedArgs& p) {
  return PrintMoved(cli, cli.client().Retry(p.positional[0]));
}

int Queues(Cli& cli, const ParsedArgs& p) {
  absl::StatusOr<std::vector<v1::QueueInfo>> queues = cli.client().QueueStats();
  if (!queues.ok()) return cli.Fail(queues.status());
  v1::QueueStatsResponse response;
  for (const v1::QueueInfo& q : *queues) *response.add_queues() = q;
  if (cli.PrintedJson(response)) return kExitOk;
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
  PrintTable(rows, cli.out());
  return kExitOk;
}

// Pause and resume: `done` is what happened to the queue.
int PrintSwitched(Cli& cli, const absl::Status& status,
                  const std::string& queue, absl::string_view done) {
  if (!status.ok()) return cli.Fail(status);
  if (cli.json()) {
    cli.out() << "{}\n";
  } else {
    cli.out() << "queue " << queue << " " << done << "\n";
  }
  return kExitOk;
}

int Pause(Cli& cli, const ParsedArgs& p) {
  const std::string& queue = p.positional[0];
  return PrintSwitched(cli, cli.client().PauseQueue(queue), queue, "paused");
}

int Resume(Cli& cli, const ParsedArgs& p) {
  const std::string& queue = p.positional[0];
  return PrintSwitched(cli, cli.client().ResumeQueue(queue), queue, "resumed");
}

int Purge(Cli& cli, const ParsedArgs& p) {
  std::optional<v1::JobState> state = p.State("state");
  if (!state) return cli.Usage("--state is required");
  const std::string& queue = p.positional[0];
  absl::StatusOr<uint64_t> purged = cli.client().PurgeQueue(queue, *state);
  if (!purged.ok()) return cli.Fail(purged.status());
  v1::PurgeQueueResponse response;
  response.set_purged(*purged);
  if (cli.PrintedJson(response)) return kExitOk;
  cli.out() << "purged " << *purged << " " << StateName(*state) << " jobs from "
            << queue << "\n";
  return kExitOk;
}

int Workers(Cli& cli, const ParsedArgs& p) {
  absl::StatusOr<std::vector<v1::WorkerInfo>> workers =
      cli.client().ListWorkers();
  if (!workers.ok()) return cli.Fail(workers.status());
  v1::ListWorkersResponse response;
  for (const v1::WorkerInfo& w : *workers) *response.add_workers() = w;
  if (cli.PrintedJson(response)) return kExitOk;
  std::vector<std::vector<std::string>> rows = {
      {"WORKER", "HOST", "QUEUES", "CREDITS", "LEASES", "CONNECTED",
       "LAST SEEN", "PEER"}};
  for (const v1::WorkerInfo& w : *workers) {
    rows.push_back({w.worker_id(), w.hostname().empty() ? "-" : w.hostname(),
                    absl::StrJoin(w.queues(), ","), absl::StrCat(w.credits()),
                    absl::StrCat(w.leases()), FormatTime(w.connected_at()),
                    FormatTime(w.last_seen()), w.peer()});
  }
  PrintTable(rows, cli.out());
  return kExitOk;
}

// ------------------------------------------------------- token commands

// The exit code for an error of client/token_file.h, printed.
int TokenFileError(Cli& cli, const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return cli.Usage(status.message());
    case absl::StatusCode::kNotFound:
      cli.err() << "ferry: " << status.message() << "\n";
      return kExitNotFound;
    default:
      cli.err() << "ferry: " << status.message() << "\n";
      return kExitError;
  }
}

int TokenCreate(Cli& cli, const ParsedArgs& p) {
  if (!p.Has("roles")) return cli.Usage("--roles is required");
  if (!p.Has("file")) return cli.Usage("--file is required");
  TokenEntry entry;
  entry.name = p.positional[0];
  absl::StatusOr<uint8_t> roles = ParseRoles(p.Get("roles"));
  if (!roles.ok()) return cli.Usage(roles.status().message());
  entry.roles = *roles;
  if (p.Has("queues")) {
    absl::StatusOr<std::vector<std::string>> queues =
        ParseQueueGlobs(p.Get("queues"));
    if (!queues.ok()) return cli.Usage(queues.status().message());
    entry.queues = *std::move(queues);
  }
  const std::string file = p.Get("file");
  absl::StatusOr<AddedToken> added = AddToken(file, entry);
  if (!added.ok()) return TokenFileError(cli, added.status());
  if (!added->warning.empty()) {
    cli.err() << "ferry: warning: " << added->warning << "\n";
  }
  // The secret alone on stdout, for `> client.token`; the rest on stderr.
  cli.out() << added->secret << "\n";
  cli.err() << "ferry: added token " << entry.name << " (roles "
            << entry.RolesText() << ", queues " << entry.QueuesText() << ") to "
            << file
            << ". Keep the secret printed above: it is shown only now, "
               "the file holds its hash. ferryd knows the token once it "
               "reads the file again.\n";
  return kExitOk;
}

int TokenList(Cli& cli, const ParsedArgs& p) {
  if (!p.Has("file")) return cli.Usage("--file is required");
  absl::StatusOr<std::vector<TokenEntry>> tokens = ReadTokens(p.Get("file"));
  if (!tokens.ok()) return TokenFileError(cli, tokens.status());
  std::vector<std::vector<std::string>> rows = {{"NAME", "ROLES", "QUEUES"}};
  for (const TokenEntry& token : *tokens) {
    rows.push_back({token.name, token.RolesText(), token.QueuesText()});
  }
  PrintTable(rows, cli.out());
  return kExitOk;
}

int TokenRevoke(Cli& cli, const ParsedArgs& p) {
  if (!p.Has("file")) return cli.Usage("--file is required");
  const std::string file = p.Get("file");
  const std::string& name = p.positional[0];
  if (absl::Status s = RemoveToken(file, name); !s.ok()) {
    return TokenFileError(cli, s);
  }
  cli.out() << "token " << name << " removed from " << file << "\n";
  cli.err() << "ferry: ferryd refuses it once it reads the file again.\n";
  return kExitOk;
}

// The commands, in the order `ferry help` lists them. A new command is one
// entry here and its run function above.
const std::vector<Command>& Commands() {
  using T = FlagType;
  static const auto* commands = new std::vector<Command>{
      {"submit",
       "QUEUE",
       "submit a job and print its id",
       {
           {"kind", "K",
            "job kind; workers pick a handler by it (default: default)"},
           {"payload", "STRING", "the payload"},
           {"payload-file", "FILE", "read the payload from FILE (- for stdin)"},
           {"content-type", "T",
            "e.g. application/json (default application/octet-stream)"},
           {"priority", "N", "-1000..1000, higher runs first (default 0)",
            T::kInt},
           {"delay", "DURATION",
            "run no earlier than this from now (30s, 5m, 2h)", T::kDuration},
           {"at", "RFC3339", "run no earlier than this time", T::kTime},
           {"max-attempts", "N",
            "attempts before the job FAILS (broker default 5)", T::kCount},
           {"timeout", "DURATION",
            "execution timeout the worker enforces (default none)",
            T::kDuration},
           {"lease-ttl", "DURATION",
            "how long a worker may go silent (1s..24h; broker default 30s)",
            T::kDuration},
           {"idempotency-key", "K",
            "submitting the same key again returns the same job"},
           {"label", "k=v", "a label; repeat for more", T::kLabels},
           {"wait", "",
            "wait for the outcome; print the result, exit 0 only if it "
            "SUCCEEDED",
            T::kSwitch},
           {"wait-timeout", "D", "how long --wait waits (default 1h)",
            T::kDuration},
       },
       "Examples:\n"
       "  ferry submit emails --kind welcome --payload '{\"to\":\"a@b\"}'\n"
       "  ferry submit reports --payload-file report.json --delay 10m\n"
       "  echo hi | ferry submit echo --payload-file - --wait\n",
       Submit},
      {"get",
       "ID",
       "show a job",
       {},
       "Prints the job's fields; the payload and result are printed when "
       "they are text.\nExample:\n  ferry get 42\n",
       Get},
      {"wait",
       "ID",
       "wait for a job to finish and print its result",
       {{"timeout", "DURATION", "give up after this long (default 1h; exit 6)",
         T::kDuration}},
       "Exit 0 if it SUCCEEDED, 5 if it FAILED or was CANCELLED.\n"
       "Example:\n  ferry wait 42 --timeout 5m\n",
       Wait},
      {"watch",
       "ID",
       "print each state change of a job until it finishes",
       {},
       "Runs until the job finishes (no time limit): exit 0 if it "
       "SUCCEEDED,\n5 if it FAILED or was CANCELLED.\n"
       "Example:\n  ferry watch 42\n",
       Watch},
      {"list",
       "",
       "list jobs, newest first",
       {
           {"queue", "Q", "only this queue"},
           {"state", "S", "only this state (see below)", T::kState},
           {"kind", "K", "only this kind"},
           {"label", "k=v",
            "only jobs with this label; repeat for more (all must match)",
            T::kLabels},
           {"limit", "N", "at most N jobs (default 20)", T::kCount},
           {"all", "", "every matching job, page after page", T::kSwitch},
           {"oldest-first", "", "oldest first", T::kSwitch},
       },
       "States: scheduled, queued, running, succeeded, failed, cancelled.\n"
       "Examples:\n  ferry list --queue emails --state failed\n"
       "  ferry list --label tenant=acme --all --json\n",
       List},
      {"cancel",
       "ID",
       "cancel a job that has not finished",
       {{"reason", "TEXT", "stored as the job's last error"}},
       "Example:\n  ferry cancel 42 --reason 'customer left'\n",
       Cancel},
      {"retry",
       "ID",
       "put a FAILED or CANCELLED job back in its queue",
       {},
       "Example:\n  ferry retry 42\n",
       Retry},
      {"queues",
       "",
       "job counts per state and oldest waiting job, per queue",
       {},
       "Example:\n  ferry queues\n",
       Queues},
      {"pause",
       "QUEUE",
       "stop handing out a queue's jobs (submits still work)",
       {},
       "Example:\n  ferry pause emails\n",
       Pause},
      {"resume",
       "QUEUE",
       "resume a paused queue",
       {},
       "Example:\n  ferry resume emails\n",
       Resume},
      {"purge",
       "QUEUE",
       "delete every job of one state in a queue",
       {{"state", "S",
         "required: scheduled, queued, succeeded, failed or cancelled",
         T::kState}},
       "Example:\n  ferry purge emails --state failed\n",
       Purge},
      {"workers",
       "",
       "connected workers, their queues, credits and leases",
       {},
       "Example:\n  ferry workers\n",
       Workers},
      {"token create",
       "NAME",
       "add a token to ferryd's token file and print its secret",
       {
           {"roles", "R[,R]",
            "required: read, submit (includes read), work, admin (all)"},
           {"queues", "GLOB[,GLOB]",
            "only these queues; '*' matches any characters (default: all)"},
           {"file", "FILE",
            "required: the token file ferryd reads (made 0600 if missing)"},
       },
       "Prints the secret alone on stdout; the file keeps only its hash, so "
       "it is\nshown only now. Does not talk to the broker: ferryd knows the "
       "token once it\nreads the file again.\n"
       "Example:\n"
       "  ferry token create billing --roles submit --queues 'billing*' \\\n"
       "      --file /etc/ferry/tokens > billing.token\n",
       TokenCreate,
       /*local=*/true},
      {"token list",
       "",
       "the tokens in a token file: names, roles, queues",
       {{"file", "FILE", "required: the token file"}},
       "Example:\n  ferry token list --file /etc/ferry/tokens\n",
       TokenList,
       /*local=*/true},
      {"token revoke",
       "NAME",
       "remove a token from a token file",
       {{"file", "FILE", "required: the token file"}},
       "Exit 3 if the file has no such token.\n"
       "Example:\n  ferry token revoke billing --file /etc/ferry/tokens\n",
       TokenRevoke,
       /*local=*/true},
  };
  return *commands;
}

// Allowed before the command and after it. --help is not listed: it is in
// the text around the list.
const std::vector<Flag>& GlobalFlags() {
  static const auto* flags = new std::vector<Flag>{
      {"broker", "HOST:PORT",
       absl::StrCat("ferryd's address (default $FERRY_BROKER, else ",
                    kDefaultBrokerAddress, ")"),
       FlagType::kAddress},
      {"json", "", "print the broker's response as JSON", FlagType::kSwitch},
      {"call-timeout", "D", "deadline of each call (default 10s)",
       FlagType::kTimeout},
      {"tls_ca", "FILE",
       "use TLS, trusting this CA for ferryd's certificate ($FERRY_TLS_CA)"},
      {"tls_cert", "FILE",
       "client certificate for mutual TLS ($FERRY_TLS_CERT)"},
      {"tls_key", "FILE", "private key of --tls_cert ($FERRY_TLS_KEY)"},
      {"tls_server_name", "NAME",
       "the name in ferryd's certificate, if not the host "
       "($FERRY_TLS_SERVER_NAME)"},
      {"token_file", "FILE", "file holding the access token (see below)"},
      {"help", "", "", FlagType::kSwitch},
  };
  return *flags;
}

bool IsGlobalFlag(absl::string_view name) {
  for (const Flag& flag : GlobalFlags()) {
    if (flag.name == name) return true;
  }
  return false;
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
    std::string head = absl::StrCat(command.name, " ", command.arg);
    out << "  " << head
        << std::string(head.size() < 20 ? 20 - head.size() : 1, ' ')
        << command.summary << "\n";
  }
  out << "\nGlobal options:\n"
      << FlagHelp(GlobalFlags())
      << "\nGlobal options may also follow the command. 'ferry help COMMAND' "
         "or\n'ferry COMMAND --help' shows a command's options. Options may "
         "be spelt with\n'_' or '-' (--tls_ca, --tls-ca).\n"
         "TLS is on when --tls_ca (or FERRY_TLS_CA) is given. The token is "
         "read from\n--token_file, else FERRY_TOKEN (the secret itself), else "
         "the file FERRY_TOKEN_FILE\nnames; it goes with every call as "
         "'authorization: Bearer ...', and ferry never\nprints it.\n"
         "Exit codes: 0 ok, 1 refused by the broker (a missing, unknown or "
         "insufficient\n"
         "            token too), 2 usage, 3 not found, 4 broker unreachable "
         "(a failed TLS\n"
         "            handshake too), 5 job failed or cancelled, 6 wait timed "
         "out.\n";
}

int UsageError(const Command& command, absl::string_view message,
               std::ostream& err) {
  err << "ferry " << command.name << ": " << message << "\n";
  PrintCommandUsage(command, err);
  return kExitUsage;
}

void PrintCommandUsage(const Command& command, std::ostream& out) {
  out << "Usage: ferry " << command.name << (command.arg[0] != '\0' ? " " : "")
      << command.arg << (command.flags.empty() ? "" : " [options]") << "\n"
      << command.summary << ".\n"
      << FlagHelp(command.flags) << command.details;
}

// "token" alone names the group of "token ..." commands: their usage, one
// after the other. False if `name` is no such group.
bool PrintGroupUsage(absl::string_view name, std::ostream& out) {
  const std::string prefix = absl::StrCat(name, " ");
  bool any = false;
  for (const Command& command : Commands()) {
    if (!absl::StartsWith(command.name, prefix)) continue;
    if (any) out << "\n";
    PrintCommandUsage(command, out);
    any = true;
  }
  return any;
}

// The command's name at args[*next]: "token create" takes two words, and
// `*next` is then left at the second.
std::string CommandName(const std::vector<std::string>& args, size_t* next) {
  std::string name = args[*next];
  if (name == "token" && *next + 1 < args.size() &&
      !absl::StartsWith(args[*next + 1], "-")) {
    absl::StrAppend(&name, " ", args[++*next]);
  }
  return name;
}

// Runs `command` on the arguments after its name, from args[next] on.
int RunCommand(const Command& command, const std::vector<std::string>& args,
               size_t next, const ParsedArgs& globals,
               const std::string& default_broker, const EnvLookup& getenv,
               std::ostream& out, std::ostream& err) {
  // `ferry get -h`: help, not job "-h".
  if (next < args.size() && args[next] == "-h") {
    PrintCommandUsage(command, out);
    return kExitOk;
  }
  // The global options may also come after the command.
  std::vector<Flag> flags = command.flags;
  flags.insert(flags.end(), GlobalFlags().begin(), GlobalFlags().end());
  ParsedArgs p;
  std::optional<FlagError> error =
      ParseFlags(args, &next, flags, StopAt::kEnd, &p);
  if (error && error->kind == FlagError::Kind::kBadValue &&
      IsGlobalFlag(error->flag)) {
    err << "ferry: " << error->message << "\n";
    return kExitUsage;
  }
  std::string usage_error;
  if (error) {
    usage_error = error->message;
  } else if (p.Has("help")) {
    PrintCommandUsage(command, out);
    return kExitOk;
  } else if (command.arg[0] == '\0' && !p.positional.empty()) {
    usage_error = "takes no arguments";
  } else if (command.arg[0] != '\0' && p.positional.size() != 1) {
    usage_error = absl::StrCat("expected one ", command.arg);
  }
  if (!usage_error.empty()) return UsageError(command, usage_error, err);
  // After the command wins over before it.
  const auto global = [&](absl::string_view name) -> const ParsedArgs& {
    return p.Has(name) ? p : globals;
  };
  ClientOptions options;
  options.broker = global("broker").Has("broker")
                       ? global("broker").Get("broker")
                       : default_broker;
  options.timeout = global("call-timeout")
                        .Duration("call-timeout")
                        .value_or(absl::Seconds(10));
  const bool json = p.Has("json") || globals.Has("json");
  if (command.local) {
    Cli cli(command, nullptr, json, out, err);
    return command.run(cli, p);
  }
  ConnectFlags connect;
  connect.tls_ca = global("tls_ca").Get("tls_ca");
  connect.tls_cert = global("tls_cert").Get("tls_cert");
  connect.tls_key = global("tls_key").Get("tls_key");
  connect.tls_server_name = global("tls_server_name").Get("tls_server_name");
  connect.token_file = global("token_file").Get("token_file");
  absl::StatusOr<ConnectOptions> resolved =
      ResolveConnectOptions(connect, getenv);
  if (!resolved.ok()) {
    err << "ferry: " << resolved.status().message() << "\n";
    return kExitUsage;
  }
  options.connect = *std::move(resolved);
  Cli cli(command, &options, json, out, err);
  return command.run(cli, p);
}

}  // namespace

int RunCli(const std::vector<std::string>& args,
           const std::string& default_broker, std::ostream& out,
           std::ostream& err, const EnvLookup& getenv) {
  if (!args.empty() && args[0] == "-h") {
    PrintUsage(out);
    return kExitOk;
  }
  ParsedArgs globals;
  size_t next = 0;
  std::optional<FlagError> error =
      ParseFlags(args, &next, GlobalFlags(), StopAt::kPositional, &globals);
  if (error && error->kind == FlagError::Kind::kUnknown) {
    err << "ferry: unknown global option " << error->arg << "\n";
    PrintUsage(err);
    return kExitUsage;
  }
  if (error) {
    err << "ferry: " << error->message << "\n";
    return kExitUsage;
  }
  if (globals.Has("help")) {
    PrintUsage(out);
    return kExitOk;
  }
  if (next == args.size()) {
    PrintUsage(err);
    return kExitUsage;
  }
  if (args[next] == "help") {
    if (next + 1 == args.size()) {
      PrintUsage(out);
      return kExitOk;
    }
    ++next;
    const std::string name = CommandName(args, &next);
    const Command* command = FindCommand(name);
    if (command == nullptr) {
      if (PrintGroupUsage(name, out)) return kExitOk;
      err << "ferry: unknown command " << name << "\n";
      return kExitUsage;
    }
    PrintCommandUsage(*command, out);
    return kExitOk;
  }
  const std::string name = CommandName(args, &next);
  const Command* command = FindCommand(name);
  if (command == nullptr) {
    // "ferry token --help": the group's commands; "ferry token": the same,
    // as a usage error.
    const bool help = next + 1 < args.size() &&
                      (args[next + 1] == "--help" || args[next + 1] == "-h");
    if (PrintGroupUsage(name, help ? out : err)) {
      return help ? kExitOk : kExitUsage;
    }
    err << "ferry: unknown command \"" << name << "\"\n";
    PrintUsage(err);
    return kExitUsage;
  }
  return RunCommand(*command, args, next + 1, globals, default_broker, getenv,
                    out, err);
}

}  // namespace ferry
