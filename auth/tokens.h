#ifndef FERRY_AUTH_TOKENS_H_
#define FERRY_AUTH_TOKENS_H_

// Access tokens. A token is a random secret the client sends as
// "authorization: Bearer <secret>"; ferryd knows it by a line of its token
// file that holds the token's name, roles, queue scopes and the SHA-256 of
// the secret (never the secret):
//
//   # NAME  roles=ROLE[,ROLE]  [queues=GLOB[,GLOB]]  sha256=HEX
//   billing roles=submit queues=billing*,invoices sha256=9f86d0...
//
// Secrets are 256 random bits from the OS, so a plain hash is enough: there
// is nothing to guess from it.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry {

// What a token may do. A token holds any set of them.
//   read:   Get, List, Watch, Wait, QueueStats, ListWorkers
//   submit: read, and Submit, SubmitBatch, Cancel, Retry
//   work:   the Workers service (Connect, Lease, Heartbeat, Complete)
//   admin:  everything, including PauseQueue, ResumeQueue, PurgeQueue
enum class Role : uint8_t {
  kRead = 1,
  kSubmit = 2,
  kWork = 4,
  kAdmin = 8,
};

// "read", "submit", "work", "admin".
absl::string_view RoleName(Role role);

// "read, submit or admin": the roles that allow what `role` does (as
// TokenEntry::Has decides).
std::string RolesAllowing(Role role);

// One token: a line of the token file.
struct TokenEntry {
  std::string name;
  uint8_t roles = 0;  // bits of Role, as written (see Has)
  // Queue globs ('*' matches any run of characters); empty: every queue.
  std::vector<std::string> queues;
  std::string sha256;  // 32 bytes, the hash of the secret

  // Whether the token may do what `role` allows: it holds the role, or one
  // that includes it (admin includes all; submit includes read).
  bool Has(Role role) const;
  // Whether `queue` is one of the token's queues.
  bool InScope(absl::string_view queue) const;
  bool AllQueues() const { return queues.empty(); }
  // "read,submit": the roles as written in the file.
  std::string RolesText() const;
  // "billing*,invoices", or "*" for every queue.
  std::string QueuesText() const;
};

// Whether `glob` matches all of `name`; '*' matches any run of characters
// (none included), every other character itself.
bool GlobMatches(absl::string_view glob, absl::string_view name);

// "read,submit" into Role bits. INVALID_ARGUMENT naming the unknown role.
absl::StatusOr<uint8_t> ParseRoles(absl::string_view text);
// "billing*,invoices" into globs, each a queue name in which '*' may stand
// for any run of characters. INVALID_ARGUMENT naming the bad one.
absl::StatusOr<std::vector<std::string>> ParseQueueGlobs(
    absl::string_view text);

// The token file's lines; INVALID_ARGUMENT naming the line and what is
// wrong (an unknown role, a duplicate name or hash, a hash that is not 64
// hex digits). '#' starts a comment line.
absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view text);

// The line ParseTokenFile reads back as `entry` (no newline).
std::string FormatTokenLine(const TokenEntry& entry);

// A new secret: "ferry_" and 43 characters of base64url (256 bits from the
// OS's random source). UNAVAILABLE if the OS gives no randomness.
absl::StatusOr<std::string> GenerateSecret();

// SHA-256 of `secret`, 32 raw bytes.
std::string HashSecret(absl::string_view secret);

// The tokens ferryd knows, looked up by secret.
class TokenSet {
 public:
  explicit TokenSet(std::vector<TokenEntry> entries);

  // The token whose hash is that of `secret`, or nullptr. Compares the
  // hash against every token's in constant time, so how long it takes
  // tells nothing about which bytes matched.
  const TokenEntry* Find(absl::string_view secret) const;

  size_t size() const { return entries_.size(); }

 private:
  std::vector<TokenEntry> entries_;
};

}  // namespace ferry

#endif  // FERRY_AUTH_TOKENS_H_
