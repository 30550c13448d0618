#include "client/token_file.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/config_lines.h"
#include "base/read_file.h"
#include "base/status_macros.h"
#include "proto/names.h"

namespace ferry {
namespace {

// An I/O error on a file that could be opened: INTERNAL.
absl::Status Errno(absl::string_view what, const std::string& file) {
  return absl::InternalError(
      absl::StrCat(what, " ", file, ": ", std::strerror(errno)));
}

// An open file descriptor, closed at the end of its scope (which also
// releases its flock).
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now; the error of close(2), which may be the write's.
  int Close() {
    const int result = close(fd_);
    fd_ = -1;
    return result;
  }

 private:
  int fd_;
};

// `file` opened for reading and appending (created 0600 if `create`),
// flocked exclusively.
absl::StatusOr<std::unique_ptr<Fd>> OpenLocked(const std::string& file,
                                               bool create) {
  const int flags = O_RDWR | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0);
  auto fd = std::make_unique<Fd>(open(file.c_str(), flags, 0600));
  if (fd->get() < 0) {
    // As ReadFileToString: a path that does not work is the user's to fix.
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open ", file, ": ", std::strerror(errno)));
  }
  while (flock(fd->get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Errno("cannot lock", file);
  }
  return fd;
}

// Everything in the open file, from its start.
absl::StatusOr<std::string> ReadAll(int fd, const std::string& file) {
  std::string text;
  char buffer[16 * 1024];
  off_t offset = 0;
  while (true) {
    const ssize_t n = pread(fd, buffer, sizeof(buffer), offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("cannot read", file);
    if (n == 0) return text;
    text.append(buffer, static_cast<size_t>(n));
    offset += n;
  }
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& file) {
  while (!data.empty()) {
    const ssize_t n = write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("cannot write", file);
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TokenEntry>> Parse(const std::string& file,
                                              absl::string_view text) {
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokenFile(text);
  if (!entries.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(file, ": ", entries.status().message()));
  }
  return entries;
}

// A warning if others than the owner may read or write the open file.
std::string PermissionWarning(int fd, const std::string& file) {
  struct stat info;
  if (fstat(fd, &info) != 0 || (info.st_mode & 077) == 0) return "";
  const bool writable = (info.st_mode & 022) != 0;
  return absl::StrFormat(
      "%s is %s by others than its owner (mode %04o); %s (chmod 600 %s)", file,
      writable ? "writable" : "readable", info.st_mode & 07777,
      writable ? "anyone who can write it can give themselves any role"
               : "it names every token and its roles",
      file);
}

}  // namespace

absl::StatusOr<AddedToken> AddToken(const std::string& file,
                                    const TokenEntry& entry) {
  if (absl::Status s = ValidateName("token name", entry.name); !s.ok()) {
    return absl::InvalidArgumentError(s.message());
  }
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<Fd> fd, OpenLocked(file, true));
  FERRY_ASSIGN_OR_RETURN(std::string text, ReadAll(fd->get(), file));
  FERRY_ASSIGN_OR_RETURN(std::vector<TokenEntry> entries, Parse(file, text));
  for (const TokenEntry& existing : entries) {
    if (existing.name == entry.name) {
      return absl::AlreadyExistsError(
          absl::StrCat("token ", entry.name, " is already in ", file,
                       " (revoke it first to replace it: ferry token revoke ",
                       entry.name, " --file ", file, ")"));
    }
  }
  AddedToken added;
  FERRY_ASSIGN_OR_RETURN(added.secret, GenerateSecret());
  TokenEntry line = entry;
  line.sha256 = HashSecret(added.secret);
  std::string append = FormatTokenLine(line) + "\n";
  // A hand-edited last line without its newline keeps its own line.
  if (!text.empty() && text.back() != '\n') append.insert(0, "\n");
  // Checked as ferryd will read it: the new line must not break the file.
  FERRY_RETURN_IF_ERROR(Parse(file, text + append).status());
  FERRY_RETURN_IF_ERROR(WriteAll(fd->get(), append, file));
  if (fsync(fd->get()) != 0) return Errno("cannot sync", file);
  added.warning = PermissionWarning(fd->get(), file);
  if (fd->Close() != 0) return Errno("cannot write", file);
  return added;
}

absl::StatusOr<std::vector<TokenEntry>> ReadTokens(const std::string& file) {
  FERRY_ASSIGN_OR_RETURN(std::string text, ReadFileToString(file));
  return Parse(file, text);
}

absl::Status RemoveToken(const std::string& file, const std::string& name) {
  FERRY_ASSIGN_OR_RETURN(std::unique_ptr<Fd> fd, OpenLocked(file, false));
  FERRY_ASSIGN_OR_RETURN(std::string text, ReadAll(fd->get(), file));
  FERRY_RETURN_IF_ERROR(Parse(file, text).status());
  int number = 0;
  for (const ConfigLine& line : ConfigLines(text)) {
    if (line.words[0] == name) number = line.number;
  }
  if (number == 0) {
    return absl::NotFoundError(absl::StrCat("no token ", name, " in ", file));
  }
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  lines.erase(lines.begin() + (number - 1));
  const std::string rest = absl::StrJoin(lines, "\n");

  struct stat info;
  if (fstat(fd->get(), &info) != 0) return Errno("cannot stat", file);
  std::string temp = file + ".XXXXXX";
  Fd out(mkstemp(temp.data()));
  if (out.get() < 0) return Errno("cannot create", temp);
  absl::Status status = WriteAll(out.get(), rest, temp);
  if (status.ok() && fchmod(out.get(), info.st_mode & 07777) != 0) {
    status = Errno("cannot chmod", temp);
  }
  if (status.ok() && fsync(out.get()) != 0) status = Errno("cannot sync", temp);
  if (status.ok() && out.Close() != 0) status = Errno("cannot write", temp);
  if (status.ok() && rename(temp.c_str(), file.c_str()) != 0) {
    status = Errno("cannot replace", file);
  }
  if (!status.ok()) unlink(temp.c_str());
  return status;
}

}  // namespace ferry
