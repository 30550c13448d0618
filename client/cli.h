#ifndef FERRY_CLIENT_CLI_H_
#define FERRY_CLIENT_CLI_H_

#include <ostream>
#include <string>
#include <vector>

#include "client/connect.h"

namespace ferry {

// Exit codes of the `ferry` command; scripts may rely on them.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,     // the broker refused (wrong state, no token or an unknown
                      // or insufficient one, ...), or I/O
  kExitUsage = 2,     // bad command line or input the broker rejected
  kExitNotFound = 3,  // unknown job id
  kExitUnreachable = 4,  // cannot reach the broker
  kExitJobFailed = 5,    // --wait / wait: the job ended FAILED or CANCELLED
  kExitWaitTimeout = 6,  // --wait / wait: not finished within the timeout
};

// Runs `ferry ARGS...` (args excludes the program name). Results go to
// `out`, messages and errors to `err`. `default_broker` is used unless
// --broker says otherwise (ferry passes BrokerAddressFromEnv()). `getenv`
// looks up FERRY_TLS_* and FERRY_TOKEN* (ResolveConnectOptions); null: the
// process's environment.
int RunCli(const std::vector<std::string>& args,
           const std::string& default_broker, std::ostream& out,
           std::ostream& err, const EnvLookup& getenv = nullptr);

}  // namespace ferry

#endif  // FERRY_CLIENT_CLI_H_
