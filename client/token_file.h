#ifndef FERRY_CLIENT_TOKEN_FILE_H_
#define FERRY_CLIENT_TOKEN_FILE_H_

// Changes to ferryd's token file (auth/tokens.h has its format), for
// `ferry token create|list|revoke`. Each change holds an exclusive flock on
// the file while it reads, checks and writes, so two at once do not lose
// one another's lines. The file is only ever written whole-line: a new
// token is appended; a revoked one is removed by writing the rest to a
// temporary file renamed over it.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "auth/tokens.h"

namespace ferry {

// What AddToken did.
struct AddedToken {
  std::string secret;  // the new token's secret; not stored anywhere
  // Set when the file can be read or written by others than its owner
  // ("FILE is readable by group and others (mode 0644)..."); the token was
  // added all the same.
  std::string warning;
};

// Adds the token `entry` names (its sha256 is ignored: a new secret is made
// and its hash written) to `file`, made with mode 0600 if missing.
//   INVALID_ARGUMENT  a bad name, or `file` cannot be opened (nothing
//                     written)
//   ALREADY_EXISTS    `file` has a token of that name (nothing written)
//   FAILED_PRECONDITION  `file` does not parse, "FILE: line 3: ..."
//   INTERNAL          cannot lock, read or write `file`
absl::StatusOr<AddedToken> AddToken(const std::string& file,
                                    const TokenEntry& entry);

// The tokens in `file`: FAILED_PRECONDITION if it does not parse,
// INVALID_ARGUMENT "cannot read FILE: ..." if it cannot be read.
absl::StatusOr<std::vector<TokenEntry>> ReadTokens(const std::string& file);

// Removes the token `name` from `file`, keeping every other line as it is
// and the file's mode. NOT_FOUND if there is none; errors as AddToken's.
absl::Status RemoveToken(const std::string& file, const std::string& name);

}  // namespace ferry

#endif  // FERRY_CLIENT_TOKEN_FILE_H_
