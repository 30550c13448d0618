#include "server/core/token.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"

namespace ferry {

std::string RandomHex(int bytes) {
  std::vector<char> buffer(bytes);
  size_t filled = 0;
  while (filled < buffer.size()) {
    ssize_t n = getrandom(buffer.data() + filled, buffer.size() - filled, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Without randomness leases cannot be fenced; this is a broken host.
      std::abort();
    }
    filled += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(
      absl::string_view(buffer.data(), buffer.size()));
}

}  // namespace ferry
