#ifndef FERRY_SERVER_CORE_TOKEN_H_
#define FERRY_SERVER_CORE_TOKEN_H_

#include <string>

namespace ferry {

// `bytes` bytes from the kernel's CSPRNG (getrandom), as lowercase hex.
// Lease tokens use 16 bytes: unguessable, so a token proves the lease.
std::string RandomHex(int bytes);

}  // namespace ferry

#endif  // FERRY_SERVER_CORE_TOKEN_H_
