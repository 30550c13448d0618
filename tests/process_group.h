#ifndef FERRY_TESTS_PROCESS_GROUP_H_
#define FERRY_TESTS_PROCESS_GROUP_H_

// Helpers for tests that run commands in process groups of their own and
// must see every process of a group gone (RunCommand, ferry-worker). The
// test process makes itself a subreaper, so orphans of a command become
// its children and can be reaped.

#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "tests/poll.h"

namespace ferry::testing {

inline std::vector<std::string> Shell(const std::string& script) {
  return {"/bin/sh", "-c", script};
}

// Makes this process adopt the orphans of its descendants. True on success.
inline bool BecomeSubreaper() { return prctl(PR_SET_CHILD_SUBREAPER, 1) == 0; }

// Shell code that publishes the shell's pid, which is also its process
// group id (the command is a group leader), atomically into `file`.
inline std::string PublishPgid(const std::string& file) {
  return absl::StrCat("echo $$ > ", file, ".tmp && mv ", file, ".tmp ", file,
                      "; ");
}

// The pgid a PublishPgid() command wrote into `file` (0 if none).
inline pid_t ReadPgidFile(const std::string& file) {
  pid_t pgid = 0;
  std::ifstream in(file);
  return in >> pgid && pgid > 0 ? pgid : 0;
}

// The same, once the command has written it; 0 if it has not within
// `timeout`. No event marks the write, so this polls (bounded).
inline pid_t AwaitPgidFile(const std::string& file, absl::Duration timeout) {
  pid_t pgid = 0;
  PollUntil([&] { return (pgid = ReadPgidFile(file)) > 0; }, timeout);
  return pgid;
}

// Reaps the dead members of `pgid` that were re-parented to this process.
inline void ReapGroup(pid_t pgid) {
  for (int i = 0; i < 1000 && waitpid(-pgid, nullptr, WNOHANG) > 0; ++i) {
  }
}

// Kills and reaps every group in `groups` (a test's tear-down).
inline void KillGroups(const std::vector<pid_t>& groups) {
  for (pid_t pgid : groups) {
    kill(-pgid, SIGKILL);
    ReapGroup(pgid);
  }
}

// True once no process of group `pgid` exists, within `timeout`. SIGKILL
// takes effect asynchronously and no event says a group is gone, so this
// polls (bounded in count and time).
inline bool GroupGone(pid_t pgid, absl::Duration timeout) {
  return PollUntil(
      [pgid] {
        ReapGroup(pgid);
        return kill(-pgid, 0) != 0 && errno == ESRCH;
      },
      timeout);
}

}  // namespace ferry::testing

#endif  // FERRY_TESTS_PROCESS_GROUP_H_
