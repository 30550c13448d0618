#ifndef FERRY_STORAGE_SQLITE_SQLITE_DB_H_
#define FERRY_STORAGE_SQLITE_SQLITE_DB_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct sqlite3;
struct sqlite3_stmt;

namespace ferry::sqlite {

// Maps an SQLite result code to a status, once for the whole store:
// BUSY/LOCKED -> UNAVAILABLE, FULL -> RESOURCE_EXHAUSTED, CONSTRAINT ->
// FAILED_PRECONDITION, CORRUPT/NOTADB -> DATA_LOSS, the rest INTERNAL.
// The message carries `context` and sqlite3_errmsg text.
absl::Status SqliteError(sqlite3* db, int rc, absl::string_view context);

// A prepared statement borrowed from a Connection's cache. Binding and
// stepping go through it; the statement is reset and unbound when the
// Statement goes out of scope, so it is ready for the next user.
// Not thread-safe (neither is the Connection it comes from).
class Statement {
 public:
  // An `owned` statement is finalized, not reset, when it goes away.
  Statement(sqlite3* db, sqlite3_stmt* stmt, bool owned = false)
      : db_(db), stmt_(stmt), owned_(owned) {}
  Statement(Statement&& other) noexcept
      : db_(other.db_), stmt_(other.stmt_), owned_(other.owned_) {
    other.stmt_ = nullptr;
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameters are 1-based, as in SQLite.
  void BindInt(int index, int64_t value);
  void BindText(int index, absl::string_view value);
  void BindBlob(int index, absl::string_view value);
  void BindNull(int index);
  // Empty text binds NULL (for optional unique keys).
  void BindTextOrNull(int index, absl::string_view value);

  // The index of a named parameter (":name"), 0 if there is none.
  int ParameterIndex(const char* name) const;

  // Binds the arguments to parameters 1, 2, ... in order.
  template <typename... Args>
  Statement& Bind(const Args&... args) {
    int index = 0;
    (BindOne(++index, args), ...);
    return *this;
  }

  // Advances; true when a row is ready, false when done.
  absl::StatusOr<bool> Step();
  // Steps to completion, discarding rows.
  absl::Status Run();

  // Columns are 0-based, as in SQLite.
  bool IsNull(int column) const;
  int64_t Int(int column) const;
  std::string Text(int column) const;
  std::string Blob(int column) const;

 private:
  void BindOne(int index, int64_t value) { BindInt(index, value); }
  void BindOne(int index, int value) { BindInt(index, value); }
  void BindOne(int index, absl::string_view value) { BindText(index, value); }
  void BindOne(int index, const std::string& value) { BindText(index, value); }
  void BindOne(int index, const char* value) { BindText(index, value); }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool owned_;
};

// One SQLite connection with a cache of prepared statements. Not
// thread-safe: a Connection is used by one thread at a time.
class Connection {
 public:
  enum class Mode { kReadWrite, kReadOnly };

  // Opens `path` (creating it in kReadWrite mode).
  static absl::StatusOr<std::unique_ptr<Connection>> Open(
      const std::string& path, Mode mode);
  ~Connection();

  // Prepares `sql` once per connection; `sql` must be a string literal (the
  // cache is keyed by its address).
  absl::StatusOr<Statement> Prepare(const char* sql);
  // Prepares SQL built at run time, for one use (not cached).
  absl::StatusOr<Statement> PrepareOnce(const std::string& sql);
  // Runs one or more statements that take no parameters.
  absl::Status Exec(absl::string_view sql);
  // Runs a single-row, single-column query (e.g. a PRAGMA).
  absl::StatusOr<std::string> QueryText(const char* sql);
  absl::StatusOr<int64_t> QueryInt(const char* sql);

  int64_t LastInsertId() const;
  // False when no transaction is open (autocommit).
  bool InTransaction() const;
  int Changes() const;
  // Memory the page cache holds (SQLITE_DBSTATUS_CACHE_USED), in bytes.
  // Like every call here, only on the thread using the connection.
  int64_t CacheBytes() const;
  sqlite3* handle() const { return db_; }

 private:
  explicit Connection(sqlite3* db) : db_(db) {}

  sqlite3* db_;
  absl::flat_hash_map<const char*, sqlite3_stmt*> cache_;
};

}  // namespace ferry::sqlite

#endif  // FERRY_STORAGE_SQLITE_SQLITE_DB_H_
