#ifndef FERRY_BASE_BROKER_ADDRESS_H_
#define FERRY_BASE_BROKER_ADDRESS_H_

#include <cstdlib>
#include <string>

namespace ferry {

// Where ferryd listens unless told otherwise, and so where clients and
// workers look for it.
inline constexpr char kDefaultBrokerAddress[] = "127.0.0.1:7070";

// The broker address for a client or worker given none on its command
// line: $FERRY_BROKER if set and not empty, else kDefaultBrokerAddress.
inline std::string BrokerAddressFromEnv() {
  const char* env = std::getenv("FERRY_BROKER");
  return env != nullptr && env[0] != '\0' ? env : kDefaultBrokerAddress;
}

}  // namespace ferry

#endif  // FERRY_BASE_BROKER_ADDRESS_H_
