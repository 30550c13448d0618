#ifndef FERRY_STORAGE_SQLITE_SQLITE_STORE_H_
#define FERRY_STORAGE_SQLITE_SQLITE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/clock.h"
#include "storage/store.h"

namespace ferry {

struct SqliteOptions {
  // The database file; its directory must exist.
  std::string path;
  // FULL: a commit is on disk before its callbacks run (survives power
  // loss). NORMAL: survives a process crash, may lose the last commits on
  // power loss.
  enum class Sync { kFull, kNormal };
  Sync sync = Sync::kFull;
  // Read connections kept open for concurrent reads.
  int max_readers = 4;
  // The write connection's page cache, in KiB (> 0). Kept small on
  // purpose: SQLite 3.40 walks every cached page at the end of a
  // transaction whose b-tree balance renumbered pages (through the
  // lock-byte page number), which most large write groups do. At 15k
  // cached pages (60 MiB) that walk was a tenth of the writer's time, and
  // with a 256 MiB limit it grew as ferryd aged. Pages not cached here are
  // read from the kernel's page cache.
  int64_t cache_kib = 16 * 1024;
  // Run `PRAGMA quick_check` at open and refuse a damaged file.
  bool check_integrity = true;
  // Hears of each committed transaction (may be empty), timed by `clock`
  // (not owned).
  CommitListener on_commit;
  const Clock* clock = SystemClock::Get();
};

// The Store on one SQLite file, with what only SQLite has. Thread-safe.
// Made by OpenSqliteStore.
class SqliteStore : public Store {
 public:
  // Memory held by the write connection's page cache once the writes
  // queued before the call are done, in bytes (for tests and stats; it
  // waits for the writer, like Flush). Not from a write's callback.
  virtual absl::StatusOr<int64_t> WriterCacheBytes() = 0;
};

// Opens or creates the database at `options.path` and applies pending schema
// migrations. Takes an exclusive lock (a `<path>.lock` file) so that a second
// broker on the same file fails at once instead of corrupting it.
//
// Errors, each naming the file and what to do:
//   FAILED_PRECONDITION  another process holds the database
//   DATA_LOSS            the file is damaged or not a Ferry database
//   UNAVAILABLE          the file or its directory cannot be opened/written
//   FAILED_PRECONDITION  the schema is newer than this binary understands
//
// The store starts one writer thread that owns the only write connection and
// commits pending writes in groups, and one thread that runs their
// callbacks; destroying the store completes every queued write first
// (including writes queued by callbacks).
absl::StatusOr<std::unique_ptr<SqliteStore>> OpenSqliteStore(
    const SqliteOptions& options);

}  // namespace ferry

#endif  // FERRY_STORAGE_SQLITE_SQLITE_STORE_H_
