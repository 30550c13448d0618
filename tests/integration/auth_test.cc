// Tokens, roles and queue scopes on every RPC of both services, over a
// real server: each call made with no token, an unknown token, a token
// without the role, and a token whose scopes leave out the queue gets the
// documented code, and the broker's state is the same after it.

#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "auth/tokens.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/log_capture.h"
#include "tests/raw_call.h"
#include "tests/server_fixture.h"
#include "tests/temp_dir.h"

namespace ferry::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

struct TokenSpec {
  const char* name;
  const char* roles;
  const char* queues;  // "" for every queue
};

// One token per role, and a token with every role but only emails*.
constexpr TokenSpec kTokens[] = {
    {"root", "admin", ""},
    {"reader", "read", ""},
    {"submitter", "submit", ""},
    {"worker", "work", ""},
    {"emails", "admin,work", "emails*"},
};

class AuthTest : public ServerTest {
 protected:
  AuthTest() {
    tokens_path_ = dir_.path() + "/tokens";
    WriteTokens(kTokens);
    options_.auth_tokens = tokens_path_;
    token_ = secrets_["root"];
  }

  template <size_t N>
  void WriteTokens(const TokenSpec (&specs)[N]) {
    std::string text = "# test tokens\n";
    for (const TokenSpec& spec : specs) {
      if (secrets_.count(spec.name) == 0) {
        absl::StatusOr<std::string> secret = GenerateSecret();
        ASSERT_TRUE(secret.ok());
        secrets_[spec.name] = *secret;
      }
      TokenEntry entry;
      entry.name = spec.name;
      entry.roles = *ParseRoles(spec.roles);
      if (spec.queues[0] != '\0') entry.queues = *ParseQueueGlobs(spec.queues);
      entry.sha256 = HashSecret(secrets_[spec.name]);
      absl::StrAppend(&text, FormatTokenLine(entry), "\n");
    }
    std::ofstream(tokens_path_) << text;
  }

  // What a refused call must leave as it was: every job (state, attempts,
  // lease), the queues' counts and pause flags, the workers.
  std::string State() {
    v1::ListRequest list;
    list.set_page_size(1000);
    list.set_view(v1::JOB_VIEW_FULL);
    absl::StatusOr<v1::ListResponse> jobs =
        Call(this->jobs(), &v1::Jobs::Stub::List, list);
    absl::StatusOr<v1::QueueStatsResponse> stats = AllStats();
    absl::StatusOr<std::vector<v1::WorkerInfo>> workers = ListWorkers();
    if (!jobs.ok() || !stats.ok() || !workers.ok()) return "unreadable";
    std::string state;
    for (const v1::Job& job : jobs->jobs()) {
      absl::StrAppend(&state, job.id(), " ", job.queue(), " ",
                      v1::JobState_Name(job.state()), " ", job.attempt(), " ",
                      job.result(), "\n");
    }
    for (const v1::QueueInfo& queue : stats->queues()) {
      absl::StrAppend(&state, queue.ShortDebugString(), "\n");
    }
    for (const v1::WorkerInfo& worker : *workers) {
      absl::StrAppend(&state, worker.worker_id(), " ", worker.leases(), "\n");
    }
    return state;
  }

  ScopedTempDir dir_;
  std::string tokens_path_;
  std::map<std::string, std::string> secrets_;
};

// A call of one RPC made with a given token; returns its status.
using Rpc = std::function<absl::Status(const std::string& token)>;

struct Case {
  std::string method;
  Rpc call;
  const char* wrong_role;  // a token without the role the method needs
  // What a token scoped to emails* gets for this call on queue q.
  absl::StatusCode out_of_scope;
};

TEST_F(AuthTest, EveryRpcRefusesMissingUnknownWrongRoleAndOutOfScopeTokens) {
  // A running job (its lease for Heartbeat and Complete), a queued one, a
  // worker on q.
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job running, Submit("q", "k", "p1"));
  v1::LeaseRequest lease_request;
  lease_request.set_worker_id("unary-1");
  lease_request.add_queues("q");
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::LeaseResponse leased,
      Call(workers(), &v1::Workers::Stub::Lease, lease_request));
  ASSERT_EQ(leased.assignments_size(), 1);
  const std::string lease = leased.assignments(0).lease_token();
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job queued, Submit("q", "k", "p2"));
  std::unique_ptr<TestWorker> q_worker = Connect("listed", "q", 0);
  ASSERT_TRUE(q_worker->Sync());
  Settle();

  v1::SubmitRequest submit;
  *submit.mutable_job() = Spec("q", "k", "x");
  v1::SubmitBatchRequest batch;
  *batch.add_jobs() = Spec("emails", "k", "x");
  *batch.add_jobs() = Spec("q", "k", "x");
  v1::GetRequest get;
  get.set_job_id(running.id());
  v1::ListRequest list;
  list.set_queue("q");
  v1::WaitRequest wait;
  wait.set_job_id(queued.id());
  wait.mutable_timeout()->set_seconds(0);
  v1::CancelRequest cancel;
  cancel.set_job_id(queued.id());
  v1::RetryRequest retry;
  retry.set_job_id(queued.id());
  v1::QueueStatsRequest stats;
  stats.set_queue("q");
  v1::PauseQueueRequest pause;
  pause.set_queue("q");
  v1::ResumeQueueRequest resume;
  resume.set_queue("q");
  v1::PurgeQueueRequest purge;
  purge.set_queue("q");
  purge.set_state(v1::JOB_STATE_QUEUED);
  v1::LeaseRequest lease_q;
  lease_q.set_worker_id("unary-2");
  lease_q.add_queues("q");
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_lease_token(lease);
  v1::CompleteRequest complete;
  complete.mutable_result()->set_lease_token(lease);
  complete.mutable_result()->mutable_success()->set_output("forged");

  auto jobs_call = [this](auto method, auto request) -> Rpc {
    return [this, method, request](const std::string& token) {
      return CallAs(token, jobs(), method, request).status();
    };
  };
  auto workers_call = [this](auto method, auto request) -> Rpc {
    return [this, method, request](const std::string& token) {
      return CallAs(token, workers(), method, request).status();
    };
  };
  // A read that must come back empty for the scoped token: OK with
  // nothing in it, checked by the caller through `check`.
  auto empty_list = [this, list](const std::string& token) -> absl::Status {
    absl::StatusOr<v1::ListResponse> r =
        CallAs(token, jobs(), &v1::Jobs::Stub::List, list);
    if (!r.ok()) return r.status();
    return r->jobs_size() == 0 ? absl::OkStatus()
                               : absl::InternalError("List showed q's jobs");
  };
  auto empty_stats = [this, stats](const std::string& token) -> absl::Status {
    absl::StatusOr<v1::QueueStatsResponse> r =
        CallAs(token, jobs(), &v1::Jobs::Stub::QueueStats, stats);
    if (!r.ok()) return r.status();
    return r->queues_size() == 0 ? absl::OkStatus()
                                 : absl::InternalError("QueueStats showed q");
  };
  auto empty_workers = [this](const std::string& token) -> absl::Status {
    absl::StatusOr<v1::ListWorkersResponse> r = CallAs(
        token, jobs(), &v1::Jobs::Stub::ListWorkers, v1::ListWorkersRequest());
    if (!r.ok()) return r.status();
    for (const v1::WorkerInfo& w : r->workers()) {
      for (const std::string& queue : w.queues()) {
        if (queue == "q") return absl::InternalError("ListWorkers showed q's");
      }
    }
    return absl::OkStatus();
  };
  auto watch = [this, &running](const std::string& token) -> absl::Status {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    v1::WatchRequest request;
    request.set_job_id(running.id());
    auto reader = jobs().Watch(&ctx, request);
    v1::WatchResponse update;
    if (reader->Read(&update)) {
      ctx.TryCancel();
      reader->Finish();
      return absl::OkStatus();
    }
    return FromGrpcStatus(reader->Finish());
  };
  auto connect = [this](const std::string& token) -> absl::Status {
    TestWorkerOptions options;
    options.worker_id = "intruder";
    options.queues = {"q"};
    options.initial_credits = 10;
    options.token = token;
    options.hello_may_fail = true;
    TestWorker worker(channel(), options);
    grpc::Status status = worker.AwaitEnd();
    if (worker.Pending(v1::ServerMessage::kAssignment) > 0) {
      return absl::InternalError("the refused worker got a job");
    }
    return FromGrpcStatus(status);
  };

  using Code = absl::StatusCode;
  const std::vector<Case> cases = {
      {"Submit", jobs_call(&v1::Jobs::Stub::Submit, submit), "reader",
       Code::kPermissionDenied},
      {"SubmitBatch", jobs_call(&v1::Jobs::Stub::SubmitBatch, batch), "reader",
       Code::kPermissionDenied},
      {"Get", jobs_call(&v1::Jobs::Stub::Get, get), "worker", Code::kNotFound},
      {"List", empty_list, "worker", Code::kOk},
      {"Watch", watch, "worker", Code::kNotFound},
      {"Wait", jobs_call(&v1::Jobs::Stub::Wait, wait), "worker",
       Code::kNotFound},
      {"Cancel", jobs_call(&v1::Jobs::Stub::Cancel, cancel), "reader",
       Code::kNotFound},
      {"Retry", jobs_call(&v1::Jobs::Stub::Retry, retry), "reader",
       Code::kNotFound},
      {"QueueStats", empty_stats, "worker", Code::kOk},
      {"PauseQueue", jobs_call(&v1::Jobs::Stub::PauseQueue, pause), "submitter",
       Code::kPermissionDenied},
      {"ResumeQueue", jobs_call(&v1::Jobs::Stub::ResumeQueue, resume),
       "submitter", Code::kPermissionDenied},
      {"PurgeQueue", jobs_call(&v1::Jobs::Stub::PurgeQueue, purge), "submitter",
       Code::kPermissionDenied},
      {"ListWorkers", empty_workers, "worker", Code::kOk},
      {"Connect", connect, "submitter", Code::kPermissionDenied},
      {"Lease", workers_call(&v1::Workers::Stub::Lease, lease_q), "reader",
       Code::kPermissionDenied},
      {"Heartbeat", workers_call(&v1::Workers::Stub::Heartbeat, heartbeat),
       "reader", Code::kPermissionDenied},
      {"Complete", workers_call(&v1::Workers::Stub::Complete, complete),
       "submitter", Code::kPermissionDenied},
  };
  ASSERT_EQ(cases.size(), 17u) << "every RPC of Jobs (13) and Workers (4)";

  const std::string before = State();
  ASSERT_THAT(before, HasSubstr("RUNNING"));
  ASSERT_THAT(before, HasSubstr("QUEUED"));
  ASSERT_THAT(before, HasSubstr("listed"));
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method);
    EXPECT_THAT(c.call(""),
                StatusIs(Code::kUnauthenticated, HasSubstr("needs a token")));
    EXPECT_THAT(c.call("ferry_" + std::string(43, 'A')),
                StatusIs(Code::kUnauthenticated, HasSubstr("not one")));
    EXPECT_THAT(c.call(secrets_[c.wrong_role]),
                StatusIs(Code::kPermissionDenied,
                         HasSubstr(absl::StrCat("token ", c.wrong_role,
                                                " may not call"))));
    EXPECT_THAT(c.call(secrets_["emails"]), StatusIs(c.out_of_scope));
    Settle();
    EXPECT_EQ(State(), before) << "a refused call changed something";
  }
}

TEST_F(AuthTest, RolesAllowWhatTheyName) {
  // submit: submit and read, not pause.
  v1::SubmitRequest submit;
  *submit.mutable_job() = Spec("q", "k", "x");
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::SubmitResponse submitted,
      CallAs(secrets_["submitter"], jobs(), &v1::Jobs::Stub::Submit, submit));
  v1::GetRequest get;
  get.set_job_id(submitted.job().id());
  EXPECT_THAT(
      CallAs(secrets_["submitter"], jobs(), &v1::Jobs::Stub::Get, get).status(),
      IsOk());
  EXPECT_THAT(
      CallAs(secrets_["reader"], jobs(), &v1::Jobs::Stub::Get, get).status(),
      IsOk());
  // work: takes the job.
  TestWorkerOptions options;
  options.initial_credits = 1;
  options.token = secrets_["worker"];
  std::unique_ptr<TestWorker> worker = Connect(options);
  EXPECT_TRUE(worker->ExpectAssignment().has_value());
}

TEST_F(AuthTest, ScopedTokenWorksInItsQueues) {
  const std::string& emails = secrets_["emails"];
  v1::SubmitRequest submit;
  *submit.mutable_job() = Spec("emails.eu", "k", "x");
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::SubmitResponse mine,
      CallAs(emails, jobs(), &v1::Jobs::Stub::Submit, submit));
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job other, Submit("q", "k", "y"));
  // List without a queue shows only its own.
  v1::ListRequest list;
  FERRY_ASSERT_OK_AND_ASSIGN(
      v1::ListResponse listed,
      CallAs(emails, jobs(), &v1::Jobs::Stub::List, list));
  ASSERT_EQ(listed.jobs_size(), 1);
  EXPECT_EQ(listed.jobs(0).id(), mine.job().id());
  // Get of the other queue's job reads exactly as a missing job.
  v1::GetRequest get;
  get.set_job_id(other.id());
  absl::Status hidden =
      CallAs(emails, jobs(), &v1::Jobs::Stub::Get, get).status();
  get.set_job_id("999999");
  absl::Status missing =
      CallAs(emails, jobs(), &v1::Jobs::Stub::Get, get).status();
  EXPECT_EQ(hidden.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(hidden.message(), absl::StrCat("job ", other.id(), " not found"));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  // A worker on its queue takes its job; the message on a refused Hello
  // names the token and the queue.
  TestWorkerOptions options;
  options.queues = {"emails.eu"};
  options.initial_credits = 1;
  options.token = emails;
  std::unique_ptr<TestWorker> worker = Connect(options);
  std::optional<v1::Assignment> got = worker->ExpectAssignment();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->job().id(), mine.job().id());
  options.worker_id = "worker-2";
  options.queues = {"emails.eu", "q"};
  std::unique_ptr<TestWorker> refused = Connect(options);
  EXPECT_THAT(FromGrpcStatus(refused->AwaitEnd()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("token emails may not use queue q")));
}

TEST_F(AuthTest, ScopedWorkerCannotReachIntoAnotherQueueWithALeaseToken) {
  // A job of q, leased by a unary call (no live stream holds it), its
  // lease token leaked to a worker whose token only covers emails*.
  FERRY_ASSERT_OK_AND_ASSIGN(v1::Job job, Submit("q", "k", "secret payload"));
  v1::LeaseRequest lease;
  lease.set_worker_id("unary-1");
  lease.add_queues("q");
  FERRY_ASSERT_OK_AND_ASSIGN(v1::LeaseResponse leased,
                             Call(workers(), &v1::Workers::Stub::Lease, lease));
  ASSERT_EQ(leased.assignments_size(), 1);
  const std::string token = leased.assignments(0).lease_token();
  const std::string before = State();

  TestWorkerOptions options;
  options.worker_id = "unary-1";  // even under the holder's worker id
  options.queues = {"emails"};
  options.token = secrets_["emails"];
  options.held_leases = {{job.id(), token}};
  std::unique_ptr<TestWorker> claims = Connect(options);
  EXPECT_THAT(FromGrpcStatus(claims->AwaitEnd()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("Hello.held_leases: token emails may not use "
                                 "queue q")));

  options.held_leases.clear();
  std::unique_ptr<TestWorker> forges = Connect(options);
  ASSERT_TRUE(forges->Sync());
  forges->Succeed(token, "forged");
  EXPECT_THAT(FromGrpcStatus(forges->AwaitEnd()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("Result: token emails may not use queue q")));

  std::unique_ptr<TestWorker> beats = Connect(options);
  ASSERT_TRUE(beats->Sync());
  beats->Heartbeat({token});
  EXPECT_THAT(FromGrpcStatus(beats->AwaitEnd()),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("Heartbeat: token emails may not use")));
  Settle();
  EXPECT_EQ(State(), before);
}

TEST_F(AuthTest, ReloadRevokesAndAddsTokens) {
  v1::QueueStatsRequest stats;
  const std::string reader = secrets_["reader"];
  ASSERT_THAT(
      CallAs(reader, jobs(), &v1::Jobs::Stub::QueueStats, stats).status(),
      IsOk());
  constexpr TokenSpec kWithoutReader[] = {{"root", "admin", ""},
                                          {"late", "read", ""}};
  WriteTokens(kWithoutReader);
  ASSERT_THAT(server().ReloadTokens(), IsOk());
  EXPECT_THAT(
      CallAs(reader, jobs(), &v1::Jobs::Stub::QueueStats, stats).status(),
      StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(
      CallAs(secrets_["late"], jobs(), &v1::Jobs::Stub::QueueStats, stats)
          .status(),
      IsOk());
  // A file that does not parse keeps the tokens in use.
  std::ofstream(tokens_path_) << "late roles=owner sha256=00\n";
  EXPECT_THAT(
      server().ReloadTokens(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("line 1")));
  EXPECT_THAT(
      CallAs(secrets_["late"], jobs(), &v1::Jobs::Stub::QueueStats, stats)
          .status(),
      IsOk());
}

TEST_F(AuthTest, SecretsNeverReachTheLog) {
  LogCapture log;
  const std::string canary = "ferry_CANARY" + std::string(37, 'c');
  v1::QueueStatsRequest stats;
  absl::Status refused =
      CallAs(canary, jobs(), &v1::Jobs::Stub::QueueStats, stats).status();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(std::string(refused.message()), Not(HasSubstr("CANARY")));
  absl::Status denied =
      CallAs(secrets_["reader"], jobs(), &v1::Jobs::Stub::PauseQueue,
             v1::PauseQueueRequest())
          .status();
  EXPECT_THAT(std::string(denied.message()),
              Not(HasSubstr(secrets_["reader"])));
  EXPECT_THAT(log.Text(), HasSubstr("call refused"));
  EXPECT_THAT(log.Text(), Not(HasSubstr("CANARY")));
  EXPECT_THAT(log.Text(), Not(HasSubstr(secrets_["reader"])));
}

TEST_F(AuthTest, HealthAnswersWithoutATokenReflectionIsOff) {
  // HealthCheckRequest{} is no bytes; SERVING is field 1 = 1 (08 01).
  EXPECT_THAT(RawCall(channel(), "/grpc.health.v1.Health/Check", ""),
              IsOkAndHolds(std::string("\x08\x01")));
  // Reflection cannot check tokens: not served when tokens are on. (A
  // list_services request: field 7, "*".)
  EXPECT_THAT(
      RawCall(channel(),
              "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
              std::string("\x3a\x01*", 3)),
      StatusIs(absl::StatusCode::kUnimplemented));
}

// Start alone, without the fixture's server.
class ExposureTest : public ::testing::Test {
 protected:
  absl::Status StartWith(ServerOptions options) {
    options.tick_interval = absl::ZeroDuration();
    absl::StatusOr<std::unique_ptr<Store>> store =
        OpenTempSqliteStore(dir_.path());
    if (!store.ok()) return store.status();
    absl::StatusOr<std::unique_ptr<FerryServer>> server =
        FerryServer::Start(store->get(), &clock_, options);
    if (server.ok()) (*server)->Shutdown();
    return server.status();
  }

  ScopedTempDir dir_;
  FakeClock clock_;
};

TEST_F(ExposureTest, NonLoopbackNeedsTlsAndTokensOrAllowInsecure) {
  ServerOptions options;
  options.listen = "0.0.0.0:0";
  EXPECT_THAT(StartWith(options),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("without TLS (--tls_cert, --tls_key) and "
                                 "tokens (--auth_tokens)")));
  options.auth_tokens = dir_.path() + "/no-such-file";
  EXPECT_THAT(StartWith(options),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("without TLS (--tls_cert, --tls_key):")));
  // Explicitly opted out: serves (on a kernel-chosen port, no traffic).
  options.auth_tokens.clear();
  options.allow_insecure = true;
  EXPECT_THAT(StartWith(options), IsOk());
  // Loopback needs neither.
  for (const char* listen : {"127.0.0.1:0", "localhost:0", "[::1]:0"}) {
    ServerOptions local;
    local.listen = listen;
    EXPECT_THAT(StartWith(local), IsOk()) << listen;
  }
}

TEST_F(ExposureTest, BadTokenFileIsRefusedNamingTheLine) {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.auth_tokens = dir_.path() + "/tokens";
  std::ofstream(options.auth_tokens) << "# ok\nalice roles=read\n";
  EXPECT_THAT(StartWith(options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("line 2: sha256= is missing")));
  options.auth_tokens = dir_.path() + "/missing";
  EXPECT_THAT(StartWith(options), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("cannot read")));
}

}  // namespace
}  // namespace ferry::testing
