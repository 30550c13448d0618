#ifndef FERRY_SERVER_SERVER_H_
#define FERRY_SERVER_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/broker_address.h"
#include "base/clock.h"
#include "grpcpp/server.h"
#include "server/core/broker.h"
#include "storage/store.h"

namespace ferry {

class Access;
class JobsService;
class WorkersService;

// TLS for the listening port. Off when cert and key are empty.
struct TlsOptions {
  std::string cert;  // PEM certificate chain file
  std::string key;   // PEM private key file
  // PEM CA file: clients must present a certificate it signed (mTLS).
  std::string client_ca;
  // How often the files are checked for changes; a changed pair is used
  // for new connections, open ones are kept.
  absl::Duration refresh = absl::Minutes(1);

  bool enabled() const { return !cert.empty() || !key.empty(); }
};

struct ServerOptions {
  // host:port; port 0 lets the kernel pick (see FerryServer::port()).
  std::string listen = kDefaultBrokerAddress;
  TlsOptions tls;
  // The token file (see auth/tokens.h); empty: no authentication, every
  // call may do everything.
  std::string auth_tokens;
  // Serve a non-loopback address without TLS and tokens (a trusted
  // network); otherwise Start refuses to.
  bool allow_insecure = false;
  BrokerOptions broker;
  // How often the ticker runs the broker's time-driven work at the most
  // idle; it also wakes for the next known deadline. Zero: no ticker thread
  // (tests call broker()->Tick() after moving a fake clock).
  absl::Duration tick_interval = absl::Milliseconds(50);
  // On shutdown, how long workers get to send their last results before
  // streams are cut.
  absl::Duration shutdown_grace = absl::Seconds(10);
  // How often ferryd checks, over a new connection to itself, that it still
  // accepts connections (gRPC 1.51 stops accepting for good after running
  // out of file descriptors once, CVE-2023-4785). After
  // `listener_probe_failures` failed checks in a row it reports NOT_SERVING
  // and calls `on_listener_lost`, so that its supervisor can restart it.
  // Zero: no checks. Real time, like the ticker.
  absl::Duration listener_probe_interval = absl::ZeroDuration();
  int listener_probe_failures = 3;
  // Bytes of Watch responses with payloads (FULL view) written but not yet
  // taken by their clients, across all streams, counted twice (ours and
  // gRPC's serialized copy); past it such a Watch is ended with
  // RESOURCE_EXHAUSTED.
  int64_t max_watch_bytes = 256 << 20;
  // Watch and Wait calls one connection may have open.
  int64_t max_watchers_per_connection = 1000;
  // Streams (calls) one connection may have open, advertised as HTTP/2's
  // SETTINGS_MAX_CONCURRENT_STREAMS: gRPC clients queue calls past it, and
  // a client that ignores it has the extra streams refused. Without it, a
  // connection opening streams and never finishing them cost ferryd about
  // 12 KB each, without end. Larger than max_watchers_per_connection, so
  // that a client at its watcher cap can still make other calls.
  int max_streams_per_connection = 2000;
  // A connection with no call open for this long is closed (GOAWAY;
  // clients reconnect on their next call), so idle connections cannot hold
  // file descriptors for ever. Zero: never.
  absl::Duration max_connection_idle = absl::Minutes(5);
  // A connection that has not finished its handshake (TLS, then HTTP/2's
  // preface) within this is closed. gRPC's own default is 120 s.
  absl::Duration handshake_timeout = absl::Seconds(20);
  std::function<void()> on_listener_lost;
};

// ferryd without main(): the broker, its services, health and reflection,
// and the ticker, on one gRPC server. Used by ferryd and by tests.
class FerryServer {
 public:
  // Loads the broker's state from `store` and starts serving. `store` and
  // `clock` are not owned and must outlive the server. UNAVAILABLE if the
  // address cannot be bound.
  static absl::StatusOr<std::unique_ptr<FerryServer>> Start(
      Store* store, const Clock* clock, ServerOptions options);

  // Shuts down (see Shutdown) if not done yet.
  ~FerryServer();

  // The bound port (the kernel's choice when the address asked for 0).
  int port() const { return port_; }
  // host:port with the real port, e.g. "127.0.0.1:41203".
  const std::string& address() const { return address_; }
  Broker* broker() { return broker_.get(); }

  // Re-reads the token file (SIGHUP): removed tokens stop working for new
  // calls. On error the tokens in use stay. FAILED_PRECONDITION without a
  // token file.
  absl::Status ReloadTokens();

  // Graceful stop: workers are told to drain, new calls are refused, calls
  // in flight get up to shutdown_grace, pending writes are committed.
  void Shutdown();

 private:
  FerryServer(const Clock* clock, Store* store, ServerOptions options);
  void TickerLoop();
  void ProbeLoop();
  // Waits up to `d` (real time) for Shutdown; true if it began.
  bool WaitForStop(absl::Duration d);

  const Clock* const clock_;
  Store* const store_;
  const ServerOptions options_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<Access> access_;
  std::unique_ptr<JobsService> jobs_;
  std::unique_ptr<WorkersService> workers_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  std::thread ticker_;
  std::thread prober_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ferry

#endif  // FERRY_SERVER_SERVER_H_
