#ifndef FERRY_SERVER_ACCESS_H_
#define FERRY_SERVER_ACCESS_H_

// Who may do what: ferryd's token file, checked on every call of the Jobs
// and Workers services. A call carries "authorization: Bearer <secret>";
// no token or an unknown one is UNAUTHENTICATED, a token without the role
// a method needs is PERMISSION_DENIED, and in both cases the handler does
// not run. Queue scopes are the handlers' to apply (Caller::InScope):
// writes outside them are PERMISSION_DENIED, reads do not see them.

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "auth/tokens.h"
#include "base/clock.h"
#include "base/log_rate_limiter.h"
#include "grpcpp/server_context.h"

namespace ferry {

// The token a call came with, for the length of the call (a reload does
// not change it under the handler). Without a token file, a Caller may do
// everything.
class Caller {
 public:
  Caller() = default;  // authentication off
  explicit Caller(std::shared_ptr<const TokenEntry> token)
      : token_(std::move(token)) {}

  // Whether `queue` is one of the token's queues.
  bool InScope(absl::string_view queue) const {
    return token_ == nullptr || token_->InScope(queue);
  }
  // Whether the token is limited to some queues.
  bool Scoped() const { return token_ != nullptr && !token_->AllQueues(); }
  // The token's queue globs; empty when it may use every queue.
  const std::vector<std::string>& queue_globs() const;
  // PERMISSION_DENIED naming the token, the queue and the token's queues
  // when `queue` is out of scope; `what` prefixes the message ("jobs[3]").
  absl::Status CheckQueue(absl::string_view queue,
                          absl::string_view what = "") const;

 private:
  std::shared_ptr<const TokenEntry> token_;
};

class Access {
 public:
  // Authentication off: every call is allowed. For tests and loopback
  // brokers.
  Access() = default;

  // Reads `path` (see auth/tokens.h for its lines). INVALID_ARGUMENT
  // naming the file and the line if it cannot be read or parsed. `clock`
  // paces the log of refused calls; not owned.
  static absl::StatusOr<std::unique_ptr<Access>> FromFile(std::string path,
                                                          const Clock* clock);

  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

  // Re-reads the token file: tokens removed from it stop working for new
  // calls at once. On error the tokens in use are kept.
  absl::Status Reload();

  // Authenticates the call and checks that its token holds `role`.
  // `method` names the call in messages and logs ("Jobs.Submit"). Refusals
  // are logged (rate limited), never with the secret.
  absl::StatusOr<Caller> Check(const grpc::CallbackServerContext& ctx,
                               Role role, absl::string_view method);

  // How many tokens the file holds (0 when off).
  size_t size() const;

 private:
  Access(std::string path, const Clock* clock);
  absl::Status Refuse(absl::Status status, const grpc::ServerContextBase& ctx,
                      absl::string_view method);

  const std::string path_;
  std::unique_ptr<LogRateLimiter> refusals_log_;
  mutable absl::Mutex mu_;
  // Held as a whole so that a Caller keeps its token alive across a
  // reload.
  std::shared_ptr<const TokenSet> tokens_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry

#endif  // FERRY_SERVER_ACCESS_H_
