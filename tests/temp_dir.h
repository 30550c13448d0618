#ifndef FERRY_TESTS_TEMP_DIR_H_
#define FERRY_TESTS_TEMP_DIR_H_

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "gtest/gtest.h"

namespace ferry::testing {

// A fresh, empty directory under ::testing::TempDir(), removed with
// everything in it when this goes away.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string pattern = ::testing::TempDir();
    if (pattern.empty() || pattern.back() != '/') pattern += '/';
    pattern += "ferry_test_XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp(" << pattern
                    << ") failed: " << std::strerror(errno);
      return;
    }
    path_ = pattern;
  }
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  ~ScopedTempDir() {
    if (path_.empty()) return;
    std::error_code error;
    std::filesystem::remove_all(path_, error);
  }

  // Empty if the directory could not be made (the test has then failed).
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_TEMP_DIR_H_
