// ferry: the command-line client. See `ferry help`.

#include <iostream>
#include <string>
#include <vector>

#include "base/broker_address.h"
#include "client/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return ferry::RunCli(args, ferry::BrokerAddressFromEnv(), std::cout,
                       std::cerr);
}
