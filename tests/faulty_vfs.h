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
    static const bool installed = [] {
      sqlite3_initialize();
      sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
      if (real == nullptr) return false;
      Real() = real;
      static sqlite3_vfs vfs = *real;  // every method forwards as it is...
      vfs.zName = "ferry-faulty";
      vfs.szOsFile = static_cast<int>(sizeof(File)) + real->szOsFile;
      vfs.xOpen = Open;  // ...but files are wrapped
      vfs.pNext = nullptr;
      return sqlite3_vfs_register(&vfs, /*makeDflt=*/1) == SQLITE_OK;
    }();
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
  struct File {
    sqlite3_file base;
    sqlite3_file* real;  // SQLite allocates it right after this struct
  };
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
  static sqlite3_file* R(sqlite3_file* f) {
    return reinterpret_cast<File*>(f)->real;
  }

  static int Open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags,
                  int* out_flags) {
    File* f = reinterpret_cast<File*>(file);
    f->real = reinterpret_cast<sqlite3_file*>(f + 1);
    const int rc = Real()->xOpen(Real(), name, f->real, flags, out_flags);
    // A file SQLite could not open has no methods and is not closed.
    f->base.pMethods = f->real->pMethods == nullptr ? nullptr : Methods();
    return rc;
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
    return R(f)->pMethods->xSync(R(f), flags);
  }

  static const sqlite3_io_methods* Methods() {
    static const sqlite3_io_methods methods = [] {
      sqlite3_io_methods m = ForwardingMethods<&R>::Table();
      m.xWrite =
          +[](sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
            {
              absl::MutexLock lock(&state().mu);
              if (state().full) return SQLITE_FULL;
            }
            return R(f)->pMethods->xWrite(R(f), buf, n, off);
          };
      m.xSync = Sync;
      return m;
    }();
    return &methods;
  }
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_FAULTY_VFS_H_
