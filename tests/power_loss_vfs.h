#ifndef FERRY_TESTS_POWER_LOSS_VFS_H_
#define FERRY_TESTS_POWER_LOSS_VFS_H_

// Simulated power loss for SQLite. RecordingVfs forwards everything to the
// default VFS (real files, real locks and shared memory) and logs each
// write, truncate, fsync and delete with its file and bytes. After a
// workload, DiskAt(k) rebuilds what a disk would hold if power failed just
// before logged operation k: for each file, only what the last fsync
// before k made durable. With `torn`, the last write before k also reached
// the disk in part (its first 512 bytes), as a torn sector write would.
//
//   RecordingVfs::Install();              // once; becomes the default VFS
//   RecordingVfs::Start();                // clears the log
//   ... run the workload; RecordingVfs::Ops() is a clock for its acks ...
//   for (k ...) WriteDisk(RecordingVfs::DiskAt(k, torn), dir);  // reopen it

#include <sqlite3.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "tests/forwarding_vfs.h"

namespace ferry::testing {

class RecordingVfs {
 public:
  enum class OpType { kWrite, kTruncate, kSync, kDelete };
  struct Op {
    OpType type;
    std::string path;
    int64_t offset = 0;  // write: where; truncate: the new size
    std::string data;    // write only
  };
  // Path -> content.
  using Disk = std::map<std::string, std::string>;

  // Idempotent. Returns false if SQLite refused the registration.
  static bool Install() {
    static const bool installed = RegisterWrappingVfs(
        "ferry-recording", sizeof(File), Open, Delete, &Real());
    return installed;
  }

  // Starts a new log (and recording, off until then).
  static void Start() {
    absl::MutexLock lock(&state().mu);
    state().ops.clear();
    state().recording = true;
  }
  static void Stop() {
    absl::MutexLock lock(&state().mu);
    state().recording = false;
  }
  // Operations logged so far.
  static int64_t Ops() {
    absl::MutexLock lock(&state().mu);
    return static_cast<int64_t>(state().ops.size());
  }

  // The disk after operations [0, k) if power failed then: every file as
  // of its last fsync before k (files never synced are absent).
  static Disk DiskAt(int64_t k, bool torn) {
    State& s = state();
    absl::MutexLock lock(&s.mu);
    Disk current, durable;
    const Op* last_write = nullptr;
    for (int64_t i = 0; i < k && i < static_cast<int64_t>(s.ops.size()); ++i) {
      const Op& op = s.ops[i];
      switch (op.type) {
        case OpType::kWrite:
          Apply(current[op.path], op.offset, op.data);
          last_write = &op;
          break;
        case OpType::kTruncate:
          current[op.path].resize(static_cast<size_t>(op.offset));
          break;
        case OpType::kSync:
          durable[op.path] = current[op.path];
          last_write = nullptr;  // on disk whole
          break;
        case OpType::kDelete:
          current.erase(op.path);
          durable.erase(op.path);
          break;
      }
    }
    if (torn && last_write != nullptr && durable.count(last_write->path) > 0) {
      Apply(durable[last_write->path], last_write->offset,
            last_write->data.substr(
                0, std::min<size_t>(512, last_write->data.size())));
    }
    return durable;
  }

 private:
  struct File {
    WrappedFile head;
    std::string* path;  // null: not logged (shared memory has no writes)
  };
  struct State {
    absl::Mutex mu;
    bool recording ABSL_GUARDED_BY(mu) = false;
    std::vector<Op> ops ABSL_GUARDED_BY(mu);
  };
  static State& state() {
    static State* s = new State;
    return *s;
  }
  static sqlite3_vfs*& Real() {
    static sqlite3_vfs* real = nullptr;
    return real;
  }
  static void Apply(std::string& content, int64_t offset,
                    const std::string& data) {
    const size_t end = static_cast<size_t>(offset) + data.size();
    if (content.size() < end) content.resize(end, '\0');
    std::memcpy(&content[static_cast<size_t>(offset)], data.data(),
                data.size());
  }
  static void Log(Op op) {
    absl::MutexLock lock(&state().mu);
    if (state().recording) state().ops.push_back(std::move(op));
  }

  static int Open(sqlite3_vfs*, const char* name, sqlite3_file* file, int flags,
                  int* out_flags) {
    File* f = reinterpret_cast<File*>(file);
    f->path = name == nullptr ? nullptr : new std::string(name);
    const int rc = OpenWrapped(Real(), sizeof(File), name, file, flags,
                               out_flags, Methods());
    if (f->head.base.pMethods == nullptr) {
      delete f->path;
      f->path = nullptr;
    }
    return rc;
  }
  static int Delete(sqlite3_vfs*, const char* name, int sync_dir) {
    Log({OpType::kDelete, name, 0, ""});
    return Real()->xDelete(Real(), name, sync_dir);
  }

  static const sqlite3_io_methods* Methods() {
    static const sqlite3_io_methods methods = [] {
      sqlite3_io_methods m = ForwardingMethods::Table();
      m.xClose = +[](sqlite3_file* file) {
        File* f = reinterpret_cast<File*>(file);
        delete f->path;
        f->path = nullptr;
        return RealFile(file)->pMethods->xClose(RealFile(file));
      };
      m.xWrite = +[](sqlite3_file* file, const void* buf, int n,
                     sqlite3_int64 off) {
        File* f = reinterpret_cast<File*>(file);
        if (f->path != nullptr) {
          Log({OpType::kWrite, *f->path, off,
               std::string(static_cast<const char*>(buf),
                           static_cast<size_t>(n))});
        }
        return RealFile(file)->pMethods->xWrite(RealFile(file), buf, n, off);
      };
      m.xTruncate = +[](sqlite3_file* file, sqlite3_int64 size) {
        File* f = reinterpret_cast<File*>(file);
        if (f->path != nullptr) Log({OpType::kTruncate, *f->path, size, ""});
        return RealFile(file)->pMethods->xTruncate(RealFile(file), size);
      };
      m.xSync = +[](sqlite3_file* file, int flags) {
        File* f = reinterpret_cast<File*>(file);
        const int rc = RealFile(file)->pMethods->xSync(RealFile(file), flags);
        if (rc == SQLITE_OK && f->path != nullptr) {
          Log({OpType::kSync, *f->path, 0, ""});
        }
        return rc;
      };
      return m;
    }();
    return &methods;
  }
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_POWER_LOSS_VFS_H_
