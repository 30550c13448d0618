#include "server/server.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "auth/certificates.h"
#include "base/log_format.h"
#include "base/read_file.h"
#include "base/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/server_builder.h"
#include "server/access.h"
#include "server/jobs_service.h"
#include "server/workers_service.h"

namespace ferry {
namespace {

// Room for a payload-sized message plus the rest of the request.
int MaxMessageBytes(int64_t max_payload_bytes) {
  const int64_t bytes =
      std::max<int64_t>(16 << 20, 2 * max_payload_bytes + (1 << 20));
  return static_cast<int>(std::min<int64_t>(bytes, INT32_MAX));
}

// Drops the reflection service from one server (the plugin is registered
// for every server a process builds).
class NoReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* args) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->erase(
        std::remove_if(plugins->begin(), plugins->end(),
                       [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                         return p->name() == "proto_server_reflection";
                       }),
        plugins->end());
  }
};

// A duration as a gRPC channel argument: milliseconds, at most INT_MAX.
int ToMillisArg(absl::Duration d) {
  return static_cast<int>(
      std::clamp<int64_t>(absl::ToInt64Milliseconds(d), 1, INT32_MAX));
}

// Whether a new connection to `target` gets an answer within `timeout`:
// the channel becomes READY, or fails its handshake (with mutual TLS the
// probe has no client certificate: refused, but answered). A listener that
// no longer accepts leaves the connection in the kernel's backlog with no
// answer: still CONNECTING at the deadline.
bool ListenerAnswers(const std::string& target,
                     const std::shared_ptr<grpc::ChannelCredentials>& creds,
                     absl::Duration timeout) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, creds, args);
  const auto deadline =
      std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout);
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY &&
         state != GRPC_CHANNEL_TRANSIENT_FAILURE) {
    if (!channel->WaitForStateChange(state, deadline)) return false;
    state = channel->GetState(/*try_to_connect=*/true);
  }
  return true;
}

// Whether clients on other machines can reach `listen` (host:port).
bool IsLoopback(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:")) return true;
  const std::string host = listen.substr(0, listen.rfind(':'));
  return host == "localhost" || absl::StartsWith(host, "127.") ||
         host == "[::1]" || host == "::1";
}

// Plaintext, or TLS with the certificate files watched for changes. The
// files are checked here first: gRPC would accept bad ones and fail every
// handshake with a message that does not say which file is wrong.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const TlsOptions& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (tls.cert.empty() || tls.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: the certificate chain and "
        "its private key");
  }
  // The files as read now; gRPC's watcher reads them again itself.
  absl::StatusOr<std::string> cert = ReadFileToString(tls.cert);
  absl::StatusOr<std::string> key = ReadFileToString(tls.key);
  for (const absl::StatusOr<std::string>* file : {&cert, &key}) {
    if (!file->ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls_cert/--tls_key: ", file->status().message()));
    }
  }
  if (absl::Status s =
          CheckCertificateAndKey(tls.cert, *cert, tls.key, *key, "certificate");
      !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert/--tls_key: ", s.message()));
  }
  if (CertificateExpiresWithin(*cert, 14 * 24 * 3600)) {
    spdlog::warn("TLS certificate expires soon subject={} not_after=\"{}\"",
                 LogValue(CertificateSubject(*cert)),
                 CertificateNotAfter(*cert));
  }
  const unsigned refresh_s = static_cast<unsigned>(
      std::max<int64_t>(1, absl::ToInt64Seconds(tls.refresh)));
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  if (tls.client_ca.empty()) {
    provider =
        std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
            tls.key, tls.cert, refresh_s);
  } else {
    absl::StatusOr<std::string> ca = ReadFileToString(tls.client_ca);
    absl::Status s = ca.ok() ? CheckCaBundle(tls.client_ca, *ca) : ca.status();
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls_client_ca: ", s.message()));
    }
    provider =
        std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
            tls.key, tls.cert, tls.client_ca, refresh_s);
  }
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (tls.client_ca.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  spdlog::info("TLS on subject={} not_after=\"{}\" client_certificates={}",
               LogValue(CertificateSubject(*cert)), CertificateNotAfter(*cert),
               tls.client_ca.empty() ? "not asked" : "required");
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace

FerryServer::FerryServer(const Clock* clock, Store* store,
                         ServerOptions options)
    : clock_(clock), store_(store), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<FerryServer>> FerryServer::Start(
    Store* store, const Clock* clock, ServerOptions options) {
  std::unique_ptr<FerryServer> server(
      new FerryServer(clock, store, std::move(options)));
  const ServerOptions& opts = server->options_;
  if (!IsLoopback(opts.listen) && !opts.allow_insecure &&
      (!opts.tls.enabled() || opts.auth_tokens.empty())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to serve ", opts.listen, " without ",
        opts.tls.enabled() ? "" : "TLS (--tls_cert, --tls_key)",
        !opts.tls.enabled() && opts.auth_tokens.empty() ? " and " : "",
        opts.auth_tokens.empty() ? "tokens (--auth_tokens)" : "",
        ": anyone who reaches the port could read every payload and run "
        "every command. Set them up (docs/operations.md, Security), listen "
        "on 127.0.0.1, or pass --allow_insecure on a trusted network"));
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      Credentials(opts.tls);
  if (!credentials.ok()) return credentials.status();
  if (opts.auth_tokens.empty()) {
    server->access_ = std::make_unique<Access>();
  } else {
    absl::StatusOr<std::unique_ptr<Access>> access =
        Access::FromFile(opts.auth_tokens, clock);
    if (!access.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth_tokens: ", access.status().message()));
    }
    server->access_ = *std::move(access);
    spdlog::info("authentication on tokens={} file={}", server->access_->size(),
                 opts.auth_tokens);
  }
  server->broker_ = std::make_unique<Broker>(store, clock, opts.broker);
  const absl::Status loaded = server->broker_->Start();
  // The store's integrity check may have run beside the loading above; a
  // damaged file explains a failed load better than the query that hit it.
  FERRY_RETURN_IF_ERROR(store->AwaitStartupCheck());
  FERRY_RETURN_IF_ERROR(loaded);
  server->jobs_ = std::make_unique<JobsService>(
      server->broker_.get(), server->access_.get(), opts.max_watch_bytes,
      opts.max_watchers_per_connection);
  server->workers_ = std::make_unique<WorkersService>(server->broker_.get(),
                                                      server->access_.get());

  // Health answers without a token (load balancers and probes have none).
  grpc::EnableDefaultHealthCheckService(true);
  // Reflection cannot check tokens: with them it is off, and tools use the
  // .proto files instead.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (server->access_->enabled()) {
    builder.SetOption(std::make_unique<NoReflection>());
  }
  builder.AddListeningPort(opts.listen, *credentials, &server->port_);
  // gRPC binds with SO_REUSEPORT by default, so a second ferryd on the
  // same address would start beside the first and split its clients
  // between two databases. Off: the second one fails to bind.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             opts.max_streams_per_connection);
  if (opts.max_connection_idle > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                               ToMillisArg(opts.max_connection_idle));
  }
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             ToMillisArg(opts.handshake_timeout));
  builder.RegisterService(server->jobs_.get());
  builder.RegisterService(server->workers_.get());
  const int max_message = MaxMessageBytes(opts.broker.policy.max_payload_bytes);
  builder.SetMaxReceiveMessageSize(max_message);
  builder.SetMaxSendMessageSize(max_message);
  // Find dead worker connections (a machine gone without a FIN) and let
  // idle workers keep their streams open with pings.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", opts.listen,
        ": the address is invalid or in use (another ferryd?); choose "
        "another with --listen"));
  }
  std::string host = opts.listen.substr(0, opts.listen.rfind(':'));
  server->address_ = absl::StrCat(host, ":", server->port_);
  server->server_->GetHealthCheckService()->SetServingStatus(true);
  if (opts.tick_interval > absl::ZeroDuration()) {
    server->ticker_ = std::thread([s = server.get()] { s->TickerLoop(); });
  }
  if (opts.listener_probe_interval > absl::ZeroDuration()) {
    server->prober_ = std::thread([s = server.get()] { s->ProbeLoop(); });
  }
  return server;
}

FerryServer::~FerryServer() { Shutdown(); }

absl::Status FerryServer::ReloadTokens() {
  if (!access_->enabled()) {
    return absl::FailedPreconditionError("no --auth_tokens file to reload");
  }
  FERRY_RETURN_IF_ERROR(access_->Reload());
  spdlog::info("tokens reloaded tokens={} file={}", access_->size(),
               access_->path());
  return absl::OkStatus();
}

bool FerryServer::WaitForStop(absl::Duration d) {
  // Waits on real time: the ticker and the probe run only with the system
  // clock.
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&stopping_), d);
  return stopping_;
}

void FerryServer::TickerLoop() {
  while (true) {
    const absl::Duration wait =
        std::clamp(broker_->NextTickTime() - clock_->Now(),
                   absl::ZeroDuration(), options_.tick_interval);
    if (WaitForStop(wait)) return;
    broker_->Tick();
  }
}

void FerryServer::ProbeLoop() {
  // The address a client would dial (a wildcard listen is probed on
  // loopback), over a new connection each time: an open one would not
  // show whether new connections are still accepted.
  std::string host = address_.substr(0, address_.rfind(':'));
  if (host == "0.0.0.0" || host == "[::]" || host.empty()) {
    host = host == "[::]" ? "[::1]" : "127.0.0.1";
  }
  const std::string target = absl::StrCat(host, ":", port_);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (options_.tls.enabled()) {
    // Only that the port accepts and speaks TLS matters here, not who it
    // is: no verification (and no token: health needs none). Under mutual
    // TLS the probe shows ferryd's own certificate, which the client CA
    // accepts if it signed it for client use too (make-certs.sh does);
    // else the handshake is refused, which still proves the listener
    // answers, but gRPC logs the refusal.
    grpc::experimental::TlsChannelCredentialsOptions o;
    o.set_verify_server_certs(false);
    o.set_check_call_host(false);
    if (!options_.tls.client_ca.empty()) {
      o.set_certificate_provider(
          std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
              options_.tls.key, options_.tls.cert, 3600));
      o.watch_identity_key_cert_pairs();
    }
    credentials = grpc::experimental::TlsCredentials(o);
  }
  int failures = 0;
  while (!WaitForStop(options_.listener_probe_interval)) {
    if (ListenerAnswers(target, credentials,
                        options_.listener_probe_interval)) {
      if (failures > 0) spdlog::info("listener accepts connections again");
      spdlog::debug("listener probe ok address={}", target);
      failures = 0;
      continue;
    }
    ++failures;
    spdlog::warn("listener probe failed address={} failures={} of {}", target,
                 failures, options_.listener_probe_failures);
    if (failures < options_.listener_probe_failures) continue;
    spdlog::error(
        "listener stopped accepting connections address={}; a known gRPC "
        "1.51 failure after file descriptors ran out (CVE-2023-4785). "
        "Reporting NOT_SERVING and stopping so that the supervisor restarts "
        "ferryd (leases survive restarts); raise LimitNOFILE",
        target);
    server_->GetHealthCheckService()->SetServingStatus(false);
    if (options_.on_listener_lost) options_.on_listener_lost();
    return;
  }
}

void FerryServer::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (server_ == nullptr) return;  // Start() failed before serving
  spdlog::info("shutting down grace_s={}",
               absl::ToInt64Seconds(options_.shutdown_grace));
  server_->GetHealthCheckService()->SetServingStatus(false);
  broker_->Drain("shutting down");
  // Refuses new calls at once; calls in flight (worker streams sending
  // their last results) get until the deadline, then are cancelled.
  server_->Shutdown(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(options_.shutdown_grace));
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (ticker_.joinable()) ticker_.join();
  if (prober_.joinable()) prober_.join();
  server_->Wait();
  // Results accepted during the grace period are committed before we go,
  // and so is every write their callbacks start (a lease put back, say):
  // no store callback may run once the broker is gone.
  store_->Quiesce(absl::InfiniteDuration());
}

}  // namespace ferry
