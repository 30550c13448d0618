#include "server/server.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/log_format.h"
#include "base/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"
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

}  // namespace

FerryServer::FerryServer(const Clock* clock, Store* store,
                         ServerOptions options)
    : clock_(clock), store_(store), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<FerryServer>> FerryServer::Start(
    Store* store, const Clock* clock, ServerOptions options) {
  std::unique_ptr<FerryServer> server(
      new FerryServer(clock, store, std::move(options)));
  const ServerOptions& opts = server->options_;
  server->broker_ = std::make_unique<Broker>(store, clock, opts.broker);
  const absl::Status loaded = server->broker_->Start();
  // The store's integrity check may have run beside the loading above; a
  // damaged file explains a failed load better than the query that hit it.
  FERRY_RETURN_IF_ERROR(store->AwaitStartupCheck());
  FERRY_RETURN_IF_ERROR(loaded);
  server->jobs_ = std::make_unique<JobsService>(server->broker_.get());
  server->workers_ = std::make_unique<WorkersService>(server->broker_.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(opts.listen, grpc::InsecureServerCredentials(),
                           &server->port_);
  // gRPC binds with SO_REUSEPORT by default, so a second ferryd on the
  // same address would start beside the first and split its clients
  // between two databases. Off: the second one fails to bind.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
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
  return server;
}

FerryServer::~FerryServer() { Shutdown(); }

void FerryServer::TickerLoop() {
  while (true) {
    const absl::Duration wait =
        std::clamp(broker_->NextTickTime() - clock_->Now(),
                   absl::ZeroDuration(), options_.tick_interval);
    {
      // Waits on real time: the ticker runs only with the system clock.
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait);
      if (stopping_) return;
    }
    broker_->Tick();
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
  server_->Wait();
  // Results accepted during the grace period are committed before we go,
  // and so is every write their callbacks start (a lease put back, say):
  // no store callback may run once the broker is gone.
  store_->Quiesce(absl::InfiniteDuration());
}

}  // namespace ferry
