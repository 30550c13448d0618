#ifndef FERRY_TESTS_FORWARDING_VFS_H_
#define FERRY_TESTS_FORWARDING_VFS_H_

// What the test VFSs (faulty_vfs.h, power_loss_vfs.h) share: they wrap
// the default VFS, registering themselves as the default, and forward each
// call to the wrapped file except the few they change.

#include <sqlite3.h>

namespace ferry::testing {

// The start of every file such a VFS opens: SQLite's header, then the
// wrapped file, which SQLite allocates right after the VFS's whole file
// struct (see RegisterWrappingVfs).
struct WrappedFile {
  sqlite3_file base;
  sqlite3_file* real;
};

inline sqlite3_file* RealFile(sqlite3_file* f) {
  return reinterpret_cast<WrappedFile*>(f)->real;
}

// Registers, as the default, a VFS named `name` that is the current
// default except for `open` (and `del`, if given), with files of
// `file_size` bytes (a struct starting with WrappedFile) before the
// wrapped file. `*real` gets the wrapped VFS. False if SQLite refused.
inline bool RegisterWrappingVfs(const char* name, size_t file_size,
                                decltype(sqlite3_vfs::xOpen) open,
                                decltype(sqlite3_vfs::xDelete) del,
                                sqlite3_vfs** real) {
  sqlite3_initialize();
  *real = sqlite3_vfs_find(nullptr);
  if (*real == nullptr) return false;
  sqlite3_vfs* vfs = new sqlite3_vfs(**real);  // lives as long as SQLite
  vfs->zName = name;
  vfs->szOsFile = static_cast<int>(file_size) + (*real)->szOsFile;
  vfs->xOpen = open;
  if (del != nullptr) vfs->xDelete = del;
  vfs->pNext = nullptr;
  return sqlite3_vfs_register(vfs, /*makeDflt=*/1) == SQLITE_OK;
}

// Opens `name` with `real` into `file`'s wrapped file; `file` gets
// `methods` if that succeeded (a file SQLite could not open has no
// methods and is not closed). `file_size` as for RegisterWrappingVfs.
inline int OpenWrapped(sqlite3_vfs* real, size_t file_size, const char* name,
                       sqlite3_file* file, int flags, int* out_flags,
                       const sqlite3_io_methods* methods) {
  WrappedFile* f = reinterpret_cast<WrappedFile*>(file);
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) +
                                            file_size);
  const int rc = real->xOpen(real, name, f->real, flags, out_flags);
  f->base.pMethods = f->real->pMethods == nullptr ? nullptr : methods;
  return rc;
}

// The io methods that forward every call to the wrapped file: a VFS takes
// the table and replaces what it changes.
struct ForwardingMethods {
  static sqlite3_io_methods Table() {
    return {
        3,
        +[](sqlite3_file* f) {
          return RealFile(f)->pMethods->xClose(RealFile(f));
        },
        +[](sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
          return RealFile(f)->pMethods->xRead(RealFile(f), buf, n, off);
        },
        +[](sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
          return RealFile(f)->pMethods->xWrite(RealFile(f), buf, n, off);
        },
        +[](sqlite3_file* f, sqlite3_int64 size) {
          return RealFile(f)->pMethods->xTruncate(RealFile(f), size);
        },
        +[](sqlite3_file* f, int flags) {
          return RealFile(f)->pMethods->xSync(RealFile(f), flags);
        },
        +[](sqlite3_file* f, sqlite3_int64* size) {
          return RealFile(f)->pMethods->xFileSize(RealFile(f), size);
        },
        +[](sqlite3_file* f, int lock) {
          return RealFile(f)->pMethods->xLock(RealFile(f), lock);
        },
        +[](sqlite3_file* f, int lock) {
          return RealFile(f)->pMethods->xUnlock(RealFile(f), lock);
        },
        +[](sqlite3_file* f, int* out) {
          return RealFile(f)->pMethods->xCheckReservedLock(RealFile(f), out);
        },
        +[](sqlite3_file* f, int op, void* arg) {
          return RealFile(f)->pMethods->xFileControl(RealFile(f), op, arg);
        },
        +[](sqlite3_file* f) {
          return RealFile(f)->pMethods->xSectorSize(RealFile(f));
        },
        +[](sqlite3_file* f) {
          return RealFile(f)->pMethods->xDeviceCharacteristics(RealFile(f));
        },
        +[](sqlite3_file* f, int region, int size, int extend,
            void volatile** out) {
          return RealFile(f)->pMethods->xShmMap(RealFile(f), region, size,
                                                extend, out);
        },
        +[](sqlite3_file* f, int offset, int n, int flags) {
          return RealFile(f)->pMethods->xShmLock(RealFile(f), offset, n, flags);
        },
        +[](sqlite3_file* f) {
          RealFile(f)->pMethods->xShmBarrier(RealFile(f));
        },
        +[](sqlite3_file* f, int remove) {
          return RealFile(f)->pMethods->xShmUnmap(RealFile(f), remove);
        },
        +[](sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
          return RealFile(f)->pMethods->xFetch(RealFile(f), off, n, out);
        },
        +[](sqlite3_file* f, sqlite3_int64 off, void* p) {
          return RealFile(f)->pMethods->xUnfetch(RealFile(f), off, p);
        },
    };
  }
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_FORWARDING_VFS_H_
