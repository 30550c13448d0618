#include "client/connect_flags.h"

#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, tls_ca, "",
          "Use TLS, trusting this CA (PEM) for ferryd's certificate. "
          "Default: $FERRY_TLS_CA.");
ABSL_FLAG(std::string, tls_cert, "",
          "Client certificate (PEM) for mutual TLS, with --tls_key. Default: "
          "$FERRY_TLS_CERT.");
ABSL_FLAG(std::string, tls_key, "",
          "Private key (PEM) of --tls_cert. Default: $FERRY_TLS_KEY.");
ABSL_FLAG(std::string, tls_server_name, "",
          "The name in ferryd's certificate, if not the host of --broker. "
          "Default: $FERRY_TLS_SERVER_NAME.");
ABSL_FLAG(std::string, token_file, "",
          "File holding the access token's secret (from 'ferry token "
          "create'). Default: $FERRY_TOKEN, else the file $FERRY_TOKEN_FILE.");

namespace ferry {

absl::StatusOr<ConnectOptions> ConnectOptionsFromFlags() {
  ConnectFlags flags;
  flags.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  flags.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  flags.tls_key = absl::GetFlag(FLAGS_tls_key);
  flags.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  flags.token_file = absl::GetFlag(FLAGS_token_file);
  return ResolveConnectOptions(flags);
}

}  // namespace ferry
