#include "server/access.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/log_format.h"
#include "base/read_file.h"
#include "base/status_macros.h"

namespace ferry {
namespace {

// Refused calls logged per second at most; the rest are counted.
constexpr int kRefusalsLoggedPerSecond = 10;

const std::vector<std::string>& NoGlobs() {
  static const auto* const globs = new std::vector<std::string>();
  return *globs;
}

// The secret of "authorization: Bearer <secret>", or empty.
absl::string_view BearerToken(const grpc::ServerContextBase& ctx) {
  const auto& metadata = ctx.client_metadata();
  const auto it = metadata.find("authorization");
  if (it == metadata.end()) return {};
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kScheme = "Bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::StartsWithIgnoreCase(value, kScheme)) {
    return {};
  }
  return value.substr(kScheme.size());
}

absl::StatusOr<std::shared_ptr<const TokenSet>> ReadTokens(
    const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::vector<TokenEntry>> entries = ParseTokenFile(*text);
  if (!entries.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", entries.status().message()));
  }
  return std::make_shared<const TokenSet>(*std::move(entries));
}

}  // namespace

const std::vector<std::string>& Caller::queue_globs() const {
  return token_ == nullptr ? NoGlobs() : token_->queues;
}

absl::Status Caller::CheckQueue(absl::string_view queue,
                                absl::string_view what) const {
  if (InScope(queue)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat(what, what.empty() ? "" : ": ", "token ", token_->name,
                   " may not use queue ", queue,
                   " (its queues: ", token_->QueuesText(), ")"));
}

Access::Access(std::string path, const Clock* clock)
    : path_(std::move(path)),
      refusals_log_(
          std::make_unique<LogRateLimiter>(clock, kRefusalsLoggedPerSecond)) {}

absl::StatusOr<std::unique_ptr<Access>> Access::FromFile(std::string path,
                                                         const Clock* clock) {
  std::unique_ptr<Access> access(new Access(std::move(path), clock));
  FERRY_RETURN_IF_ERROR(access->Reload());
  return access;
}

absl::Status Access::Reload() {
  absl::StatusOr<std::shared_ptr<const TokenSet>> tokens = ReadTokens(path_);
  if (!tokens.ok()) return tokens.status();
  absl::MutexLock lock(&mu_);
  tokens_ = *std::move(tokens);
  return absl::OkStatus();
}

size_t Access::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return tokens_ == nullptr ? 0 : tokens_->size();
}

absl::Status Access::Refuse(absl::Status status,
                            const grpc::ServerContextBase& ctx,
                            absl::string_view method) {
  int64_t suppressed = 0;
  if (refusals_log_->Allow(&suppressed)) {
    spdlog::warn("call refused method={} peer={} code={} reason=\"{}\"{}",
                 method, LogValue(ctx.peer()),
                 absl::StatusCodeToString(status.code()),
                 LogValue(status.message()),
                 suppressed > 0 ? absl::StrCat(" suppressed=", suppressed)
                                : std::string());
  }
  return status;
}

absl::StatusOr<Caller> Access::Check(const grpc::CallbackServerContext& ctx,
                                     Role role, absl::string_view method) {
  if (!enabled()) return Caller();
  const absl::string_view secret = BearerToken(ctx);
  if (secret.empty()) {
    return Refuse(
        absl::UnauthenticatedError(
            "this broker needs a token: send metadata 'authorization: "
            "Bearer <token>' (ferry, ferry-worker: --token_file or "
            "FERRY_TOKEN)"),
        ctx, method);
  }
  std::shared_ptr<const TokenSet> tokens;
  {
    absl::ReaderMutexLock lock(&mu_);
    tokens = tokens_;
  }
  const TokenEntry* token = tokens->Find(secret);
  if (token == nullptr) {
    return Refuse(absl::UnauthenticatedError(
                      "the token is not one this broker knows (mistyped, or "
                      "revoked); ask the operator for a new one"),
                  ctx, method);
  }
  if (!token->Has(role)) {
    return Refuse(
        absl::PermissionDeniedError(absl::StrCat(
            "token ", token->name, " may not call ", method, ": it needs role ",
            RolesAllowing(role), "; it has ", token->RolesText())),
        ctx, method);
  }
  // Shares ownership of the whole set: the entry lives as long as the call.
  return Caller(std::shared_ptr<const TokenEntry>(tokens, token));
}

}  // namespace ferry
