#ifndef FERRY_CLIENT_CLI_H_
#define FERRY_CLIENT_CLI_H_

#include <ostream>
#include <string>
#include <vector>

namespace ferry {

// Exit codes of the `ferry` command; scripts may rely on them.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,        // the broker refused (wrong state, ...), or I/O
  kExitUsage = 2,        // bad command line or input the broker rejected
  kExitNotFound = 3,     // unknown job id
  kExitUnreachable = 4,  // cannot reach the broker
  kExitJobFailed = 5,    // --wait / wait: the job ended FAILED or CANCELLED
  kExitWaitTimeout = 6,  // --wait / wait: not finished within the timeout
};

// Runs `ferry ARGS...` (args excludes the program name). Results go to
// `out`, messages and errors to `err`. `default_broker` is used unless
// --broker says otherwise (ferry passes BrokerAddressFromEnv()).
int RunCli(const std::vector<std::string>& args,
           const std::string& default_broker, std::ostream& out,
           std::ostream& err);

}  // namespace ferry

#endif  // FERRY_CLIENT_CLI_H_
