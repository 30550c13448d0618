#ifndef FERRY_TESTS_FAULTY_VFS_H_
#define FERRY_TESTS_FAULTY_VFS_H_

// A SQLite VFS that forwards everything to the default one, except that a
// test can hold the next fsync (xSync) until it says so, make fsyncs fail,
// and make writes fail as on a full disk: the storage faults a durable store
// must survive without reporting a write that is not on disk. Install() makes
// it the process's default VFS, so the code under test opens through it
// unchanged; with no fault set it only forwards.
//
//   FaultyVfs::Install();
//   FaultyVfs::HoldNextSync();            // the next commit stops in fsync
//   ... queue writes, FaultyVfs::AwaitHeld() ...
//   FaultyVfs::FailSyncs(true);
//   FaultyVfs::Release();                 // that fsync, and later ones, fail

#include <sqlite3.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tests/forwarding_vfs.h"

namespace ferry::testing {

class FaultyVfs {
 public:
  // Idempotent. Returns false if SQLite refused the registration.
  static bool Install() {
    static const bool installed = RegisterWrappingVfs(
        "ferry-faulty", sizeof(WrappedFile), Open, nullptr, &Real());
    return installed;
  }

  // While set, every fsync fails with SQLITE_IOERR_FSYNC.
  static void FailSyncs(bool fail) {
    absl::MutexLock lock(&state().mu);
    state().fail = fail;
  }
  // While set, every write fails with SQLITE_FULL (a full disk).
  static void FailWritesFull(bool full) {
    absl::MutexLock lock(&state().mu);
    state().full = full;
  }
  // The next fsync waits in the VFS until Release().
  static void HoldNextSync() {
    absl::MutexLock lock(&state().mu);
    state().hold_next = true;
    state().holding = false;
  }
  // Waits until a sync is held; false after `timeout`.
  static bool AwaitHeld(absl::Duration timeout) {
    absl::MutexLock lock(&state().mu);
    return state().mu.AwaitWithTimeout(absl::Condition(&state().holding),
                                       timeout);
  }
  static void Release() {
    absl::MutexLock lock(&state().mu);
    state().hold_next = false;
    state().holding = false;
  }

 private:
  struct State {
    absl::Mutex mu;
    bool fail ABSL_GUARDED_BY(mu) = false;
    bool full ABSL_GUARDED_BY(mu) = false;
    bool hold_next ABSL_GUARDED_BY(mu) = false;
    bool holding ABSL_GUARDED_BY(mu) = false;
  };
  static State& state() {
    static State* s = new State;
    return *s;
  }
  static sqlite3_vfs*& Real() {
    static sqlite3_vfs* real = nullptr;
    return real;
  }
  static int Open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags,
                  int* out_flags) {
    return OpenWrapped(Real(), sizeof(WrappedFile), name, file, flags,
                       out_flags, Methods());
  }

  static int Sync(sqlite3_file* f, int flags) {
    {
      State& s = state();
      absl::MutexLock lock(&s.mu);
      if (s.hold_next) {
        s.holding = true;
        s.mu.Await(absl::Condition(
            +[](State* s)
                 ABSL_NO_THREAD_SAFETY_ANALYSIS { return !s->hold_next; },
            &s));
      }
      if (s.fail) return SQLITE_IOERR_FSYNC;
    }
    return RealFile(f)->pMethods->xSync(RealFile(f), flags);
  }

  static const sqlite3_io_methods* Methods() {
    static const sqlite3_io_methods methods = [] {
      sqlite3_io_methods m = ForwardingMethods::Table();
      m.xWrite =
          +[](sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
            {
              absl::MutexLock lock(&state().mu);
              if (state().full) return SQLITE_FULL;
            }
            return RealFile(f)->pMethods->xWrite(RealFile(f), buf, n, off);
          };
      m.xSync = Sync;
      return m;
    }();
    return &methods;
  }
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_FAULTY_VFS_H_
