#include "auth/tokens.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/config_lines.h"
#include "base/status_macros.h"
#include "proto/names.h"

namespace ferry {
namespace {

constexpr Role kRoles[] = {Role::kRead, Role::kSubmit, Role::kWork,
                           Role::kAdmin};
constexpr char kSecretPrefix[] = "ferry_";
constexpr size_t kSecretBytes = 32;

bool IsHex(absl::string_view text) {
  for (char c : text) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  return true;
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kRead:
      return "read";
    case Role::kSubmit:
      return "submit";
    case Role::kWork:
      return "work";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

std::string RolesAllowing(Role role) {
  std::vector<absl::string_view> names;
  for (Role holder : kRoles) {
    const TokenEntry only{"", static_cast<uint8_t>(holder), {}, ""};
    if (only.Has(role)) names.push_back(RoleName(holder));
  }
  std::string text(names.front());
  for (size_t i = 1; i < names.size(); ++i) {
    absl::StrAppend(&text, i + 1 == names.size() ? " or " : ", ", names[i]);
  }
  return text;
}

bool TokenEntry::Has(Role role) const {
  if (roles & static_cast<uint8_t>(Role::kAdmin)) return true;
  if (roles & static_cast<uint8_t>(role)) return true;
  return role == Role::kRead && (roles & static_cast<uint8_t>(Role::kSubmit));
}

bool TokenEntry::InScope(absl::string_view queue) const {
  if (queues.empty()) return true;
  for (const std::string& glob : queues) {
    if (GlobMatches(glob, queue)) return true;
  }
  return false;
}

std::string TokenEntry::RolesText() const {
  std::vector<absl::string_view> names;
  for (Role role : kRoles) {
    if (roles & static_cast<uint8_t>(role)) names.push_back(RoleName(role));
  }
  return absl::StrJoin(names, ",");
}

std::string TokenEntry::QueuesText() const {
  return queues.empty() ? "*" : absl::StrJoin(queues, ",");
}

bool GlobMatches(absl::string_view glob, absl::string_view name) {
  // Iterative match with one backtrack point: the last '*' seen.
  size_t g = 0, n = 0, star = absl::string_view::npos, resume = 0;
  while (n < name.size()) {
    if (g < glob.size() && glob[g] == '*') {
      star = g++;
      resume = n;
    } else if (g < glob.size() && glob[g] == name[n]) {
      ++g;
      ++n;
    } else if (star != absl::string_view::npos) {
      g = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (g < glob.size() && glob[g] == '*') ++g;
  return g == glob.size();
}

absl::StatusOr<uint8_t> ParseRoles(absl::string_view text) {
  // Checked here, not left to the split: absl::StrSplit yields no piece at
  // all for a null string_view (a "roles" given without '='), which would
  // read as a token with no role.
  if (text.empty()) {
    return absl::InvalidArgumentError(
        "roles needs a value: one or more of read, submit, work, admin");
  }
  uint8_t roles = 0;
  for (absl::string_view name : absl::StrSplit(text, ',')) {
    bool known = false;
    for (Role role : kRoles) {
      if (name == RoleName(role)) {
        roles |= static_cast<uint8_t>(role);
        known = true;
      }
    }
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown role '", name, "'; roles are read, submit, work and admin"));
    }
  }
  return roles;
}

absl::StatusOr<std::vector<std::string>> ParseQueueGlobs(
    absl::string_view text) {
  // As for roles: a "queues" without a value must not read as every queue.
  if (text.empty()) {
    return absl::InvalidArgumentError(
        "queues needs a value: queue names, '*' standing for any "
        "characters (e.g. emails*), or * for every queue");
  }
  std::vector<std::string> globs;
  for (absl::string_view glob : absl::StrSplit(text, ',')) {
    if (glob == "*") return std::vector<std::string>();  // every queue
    bool valid = !glob.empty() && glob.size() <= kMaxNameLength;
    for (char c : glob) valid = valid && (c == '*' || IsNameChar(c));
    if (!valid) {
      return absl::InvalidArgumentError(absl::StrCat(
          "queue scope '", glob,
          "' is not a queue name in which '*' stands for any characters "
          "(e.g. emails*)"));
    }
    globs.emplace_back(glob);
  }
  return globs;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(absl::string_view text) {
  std::vector<TokenEntry> entries;
  std::set<std::string> names, hashes;
  for (const ConfigLine& line : ConfigLines(text)) {
    const auto error = [&line](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line.number, ": ", what));
    };
    TokenEntry entry;
    entry.name = std::string(line.words[0]);
    if (absl::Status s = ValidateName("token name", entry.name); !s.ok()) {
      return error(s.message());
    }
    bool has_roles = false;
    for (size_t i = 1; i < line.words.size(); ++i) {
      const std::pair<absl::string_view, absl::string_view> kv =
          absl::StrSplit(line.words[i], absl::MaxSplits('=', 1));
      if (kv.first == "roles") {
        absl::StatusOr<uint8_t> roles = ParseRoles(kv.second);
        if (!roles.ok()) return error(roles.status().message());
        entry.roles = *roles;
        has_roles = true;
      } else if (kv.first == "queues") {
        absl::StatusOr<std::vector<std::string>> globs =
            ParseQueueGlobs(kv.second);
        if (!globs.ok()) return error(globs.status().message());
        entry.queues = *std::move(globs);
      } else if (kv.first == "sha256") {
        if (kv.second.size() != 2 * SHA256_DIGEST_LENGTH || !IsHex(kv.second)) {
          return error("sha256 must be 64 hex digits (the secret's hash)");
        }
        entry.sha256 = absl::HexStringToBytes(kv.second);
      } else {
        return error(absl::StrCat("unknown field '", kv.first,
                                  "'; a token line is NAME roles=ROLES "
                                  "[queues=GLOBS] sha256=HASH"));
      }
    }
    if (!has_roles) return error("roles= is missing");
    if (entry.sha256.empty()) return error("sha256= is missing");
    if (!names.insert(entry.name).second) {
      return error(absl::StrCat("token name ", entry.name, " is used twice"));
    }
    if (!hashes.insert(entry.sha256).second) {
      return error(absl::StrCat("token ", entry.name,
                                " has the same secret as an earlier one"));
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

std::string FormatTokenLine(const TokenEntry& entry) {
  std::string line = absl::StrCat(entry.name, " roles=", entry.RolesText());
  if (!entry.queues.empty()) {
    absl::StrAppend(&line, " queues=", absl::StrJoin(entry.queues, ","));
  }
  absl::StrAppend(&line, " sha256=", absl::BytesToHexString(entry.sha256));
  return line;
}

absl::StatusOr<std::string> GenerateSecret() {
  char bytes[kSecretBytes];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("no randomness from the OS: ", std::strerror(errno)));
    }
    got += static_cast<size_t>(n);
  }
  std::string secret = absl::StrCat(
      kSecretPrefix,
      absl::WebSafeBase64Escape(absl::string_view(bytes, sizeof(bytes))));
  OPENSSL_cleanse(bytes, sizeof(bytes));
  return secret;
}

std::string HashSecret(absl::string_view secret) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(),
         digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

TokenSet::TokenSet(std::vector<TokenEntry> entries)
    : entries_(std::move(entries)) {}

const TokenEntry* TokenSet::Find(absl::string_view secret) const {
  const std::string hash = HashSecret(secret);
  const TokenEntry* found = nullptr;
  for (const TokenEntry& entry : entries_) {
    // No early exit: every entry is compared.
    if (CRYPTO_memcmp(entry.sha256.data(), hash.data(), hash.size()) == 0) {
      found = &entry;
    }
  }
  return found;
}

}  // namespace ferry
