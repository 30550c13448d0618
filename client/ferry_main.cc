// ferry: the command-line client. See `ferry help`.

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  const char* broker = std::getenv("FERRY_BROKER");
  return ferry::RunCli(args, broker != nullptr ? broker : "", std::cout,
                       std::cerr);
}
