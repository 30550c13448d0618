#ifndef FERRY_TESTS_LOOPBACK_SOCKET_H_
#define FERRY_TESTS_LOOPBACK_SOCKET_H_

// A TCP socket on 127.0.0.1 and a kernel-chosen port, for tests that need
// an address nobody serves: bound only, it refuses every connection (and
// nobody else can take the port while it is held); listening, it takes
// connections and never answers. Closed when destroyed.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace ferry::testing {

class LoopbackSocket {
 public:
  enum class Mode { kRefusing, kSilent };

  explicit LoopbackSocket(Mode mode) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      error_ = std::strerror(errno);
      return;
    }
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        (mode == Mode::kSilent && listen(fd_, 16) != 0) ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      error_ = std::strerror(errno);
      return;
    }
    address_ = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  }
  LoopbackSocket(const LoopbackSocket&) = delete;
  LoopbackSocket& operator=(const LoopbackSocket&) = delete;
  ~LoopbackSocket() {
    if (fd_ >= 0) close(fd_);
  }

  // Empty if the socket could not be set up (then see error()).
  const std::string& address() const { return address_; }
  const std::string& error() const { return error_; }

 private:
  int fd_ = -1;
  std::string address_;
  std::string error_;
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_LOOPBACK_SOCKET_H_
