#ifndef FERRY_TESTS_FORWARDING_VFS_H_
#define FERRY_TESTS_FORWARDING_VFS_H_

// The io methods of a test VFS that wraps the default one: each call goes
// to the wrapped file, which `Real(file)` returns. A VFS takes the table
// and replaces the few methods it changes (see faulty_vfs.h,
// power_loss_vfs.h).

#include <sqlite3.h>

namespace ferry::testing {

template <sqlite3_file* (*Real)(sqlite3_file*)>
struct ForwardingMethods {
  static sqlite3_io_methods Table() {
    return {
        3,
        +[](sqlite3_file* f) { return Real(f)->pMethods->xClose(Real(f)); },
        +[](sqlite3_file* f, void* buf, int n, sqlite3_int64 off) {
          return Real(f)->pMethods->xRead(Real(f), buf, n, off);
        },
        +[](sqlite3_file* f, const void* buf, int n, sqlite3_int64 off) {
          return Real(f)->pMethods->xWrite(Real(f), buf, n, off);
        },
        +[](sqlite3_file* f, sqlite3_int64 size) {
          return Real(f)->pMethods->xTruncate(Real(f), size);
        },
        +[](sqlite3_file* f, int flags) {
          return Real(f)->pMethods->xSync(Real(f), flags);
        },
        +[](sqlite3_file* f, sqlite3_int64* size) {
          return Real(f)->pMethods->xFileSize(Real(f), size);
        },
        +[](sqlite3_file* f, int lock) {
          return Real(f)->pMethods->xLock(Real(f), lock);
        },
        +[](sqlite3_file* f, int lock) {
          return Real(f)->pMethods->xUnlock(Real(f), lock);
        },
        +[](sqlite3_file* f, int* out) {
          return Real(f)->pMethods->xCheckReservedLock(Real(f), out);
        },
        +[](sqlite3_file* f, int op, void* arg) {
          return Real(f)->pMethods->xFileControl(Real(f), op, arg);
        },
        +[](sqlite3_file* f) {
          return Real(f)->pMethods->xSectorSize(Real(f));
        },
        +[](sqlite3_file* f) {
          return Real(f)->pMethods->xDeviceCharacteristics(Real(f));
        },
        +[](sqlite3_file* f, int region, int size, int extend,
            void volatile** out) {
          return Real(f)->pMethods->xShmMap(Real(f), region, size, extend, out);
        },
        +[](sqlite3_file* f, int offset, int n, int flags) {
          return Real(f)->pMethods->xShmLock(Real(f), offset, n, flags);
        },
        +[](sqlite3_file* f) { Real(f)->pMethods->xShmBarrier(Real(f)); },
        +[](sqlite3_file* f, int remove) {
          return Real(f)->pMethods->xShmUnmap(Real(f), remove);
        },
        +[](sqlite3_file* f, sqlite3_int64 off, int n, void** out) {
          return Real(f)->pMethods->xFetch(Real(f), off, n, out);
        },
        +[](sqlite3_file* f, sqlite3_int64 off, void* p) {
          return Real(f)->pMethods->xUnfetch(Real(f), off, p);
        },
    };
  }
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_FORWARDING_VFS_H_
