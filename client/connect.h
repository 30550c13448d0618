#ifndef FERRY_CLIENT_CONNECT_H_
#define FERRY_CLIENT_CONNECT_H_

// How every Ferry program reaches ferryd: the client SDK, the worker SDK,
// ferry, ferry-worker and ferry-bench make their channels here, with TLS
// and an access token when configured.
//
//   ConnectFlags flags;                  // what the command line gave
//   flags.tls_ca = absl::GetFlag(FLAGS_tls_ca);
//   ...
//   absl::StatusOr<ConnectOptions> connect = ResolveConnectOptions(flags);
//   if (!connect.ok()) return Usage(connect.status().message());
//   absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
//       OpenChannel(broker, *connect, grpc::ChannelArguments());
//
// TLS is on when a CA is given: the broker's certificate must chain to it
// and name the host dialed (or tls_server_name). A client certificate and
// key (mutual TLS) go with a CA only: a client certificate sent over a
// connection whose server is not verified would prove nothing about the
// server, so that is an error rather than a silent fallback to the system's
// roots.
//
// The token, when there is one, goes with every call as the metadata
// "authorization: Bearer <token>", TLS or not (so it also works on a
// plaintext loopback channel, where gRPC refuses call credentials). Nothing
// here logs or prints the token, and no error message contains it.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/channel_arguments.h"

namespace ferry {

// Environment variables read by ResolveConnectOptions.
inline constexpr char kEnvTlsCa[] = "FERRY_TLS_CA";
inline constexpr char kEnvTlsCert[] = "FERRY_TLS_CERT";
inline constexpr char kEnvTlsKey[] = "FERRY_TLS_KEY";
inline constexpr char kEnvTlsServerName[] = "FERRY_TLS_SERVER_NAME";
inline constexpr char kEnvToken[] = "FERRY_TOKEN";
inline constexpr char kEnvTokenFile[] = "FERRY_TOKEN_FILE";

// TLS and the token for a channel to ferryd. Empty fields are not set.
struct ConnectOptions {
  // PEM file of the CA certificate(s) that signed the broker's certificate.
  // Set: TLS. Empty: plaintext (and every other TLS field must be empty).
  std::string tls_ca;
  // PEM files of this client's certificate (with any intermediates after
  // it) and its unencrypted private key, for brokers that ask for one
  // (mutual TLS). Both or neither.
  std::string tls_cert;
  std::string tls_key;
  // The name the broker's certificate must carry, when it is not the host
  // of the address dialed (an IP address, a load balancer's name).
  std::string tls_server_name;
  // The token's secret ("ferry_..."), sent as "authorization: Bearer
  // <token>" on every call. A secret: never logged, printed or put in an
  // error message by anything in Ferry.
  std::string token;

  bool tls() const { return !tls_ca.empty(); }
  bool has_token() const { return !token.empty(); }
};

// What a command line gave; empty: not given (the environment may say).
// The token comes only from a file (or the environment), never from an
// argument, which any user of the machine can read in `ps`.
struct ConnectFlags {
  std::string tls_ca;           // --tls_ca
  std::string tls_cert;         // --tls_cert
  std::string tls_key;          // --tls_key
  std::string tls_server_name;  // --tls_server_name
  std::string token_file;       // --token_file
};

// Looks up an environment variable; nullptr if unset. Defaults to getenv.
using EnvLookup = std::function<const char*(const char*)>;

// The ConnectOptions for `flags`: each TLS field from its flag, else from
// its environment variable (FERRY_TLS_CA, FERRY_TLS_CERT, FERRY_TLS_KEY,
// FERRY_TLS_SERVER_NAME; an empty variable counts as unset). The token
// from the first of: the file --token_file names, $FERRY_TOKEN, the file
// $FERRY_TOKEN_FILE names. A token file holds the secret alone; whitespace
// around it (the trailing newline) is dropped.
//
// Checks everything up front (CheckConnectOptions), so a program can refuse
// to start with INVALID_ARGUMENT and a message that names the flag or
// variable, the file and what is wrong with it:
//   --tls_cert needs --tls_key (or FERRY_TLS_KEY)
//   --tls_cert needs --tls_ca (or FERRY_TLS_CA): ...
//   token file FILE is empty
//   cannot read FILE: No such file or directory
// None of them contains the token.
absl::StatusOr<ConnectOptions> ResolveConnectOptions(
    const ConnectFlags& flags, const EnvLookup& getenv = nullptr);

// Reads the TLS files of `options` and checks them: the CA file holds PEM
// certificates; the client certificate is one, valid now, and the key is
// its key; fields that need another have it. INVALID_ARGUMENT saying which
// file and what is wrong:
//   cannot read FILE: REASON
//   FILE is not a PEM certificate
//   client certificate FILE has expired (on 2026-01-02 15:04:05 UTC)
//   client certificate FILE is not valid yet (until ...)
//   FILE is not a PEM private key (or is encrypted)
//   key FILE does not match certificate FILE
// Also checks that the token can be sent as a header (printable, one
// word), without quoting it.
absl::Status CheckConnectOptions(const ConnectOptions& options);

// A channel to `address` with the TLS and token of `options` (checked as
// CheckConnectOptions does; its errors) and `args` (for TLS with
// tls_server_name, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG is added). Like any
// gRPC channel it connects on first use: a broker that cannot be reached,
// or whose certificate does not verify, fails calls with UNAVAILABLE.
absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(
    const std::string& address, const ConnectOptions& options,
    grpc::ChannelArguments args);

}  // namespace ferry

#endif  // FERRY_CLIENT_CONNECT_H_
