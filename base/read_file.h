#ifndef FERRY_BASE_READ_FILE_H_
#define FERRY_BASE_READ_FILE_H_

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace ferry {

// The whole of the file at `path` (a pipe or FIFO too). INVALID_ARGUMENT
// "cannot read PATH: REASON" if it cannot be opened or read (a directory,
// say), so that a command-line tool can print it as a usage error.
inline absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  const auto error = [&path](int number) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(number)));
  };
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return error(errno);
  std::string contents;
  char buffer[64 * 1024];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      contents.append(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    const int number = errno;
    close(fd);
    if (n < 0) return error(number);
    return contents;
  }
}

}  // namespace ferry

#endif  // FERRY_BASE_READ_FILE_H_
