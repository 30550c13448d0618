#include "server/core/lease_table.h"

namespace ferry {

LeaseState& LeaseTable::Add(const std::string& token) { return leases_[token]; }

LeaseState* LeaseTable::Find(const std::string& token) {
  auto it = leases_.find(token);
  return it == leases_.end() ? nullptr : &it->second;
}

std::optional<LeaseState> LeaseTable::Drop(const std::string& token) {
  auto it = leases_.find(token);
  if (it == leases_.end()) return std::nullopt;
  deadlines_.erase({it->second.deadline, token});
  std::optional<LeaseState> lease = std::move(it->second);
  leases_.erase(it);
  return lease;
}

void LeaseTable::SetDeadline(const std::string& token, LeaseState& lease,
                             absl::Time deadline) {
  deadlines_.erase({lease.deadline, token});
  lease.deadline = deadline;
  deadlines_.insert({deadline, token});
}

void LeaseTable::ClearDeadline(const std::string& token, LeaseState& lease) {
  deadlines_.erase({lease.deadline, token});
}

absl::Time LeaseTable::NextDeadline() const {
  return deadlines_.empty() ? absl::InfiniteFuture()
                            : deadlines_.begin()->first;
}

std::optional<std::string> LeaseTable::FirstExpired(absl::Time now) const {
  if (deadlines_.empty() || deadlines_.begin()->first > now) {
    return std::nullopt;
  }
  return deadlines_.begin()->second;
}

int LeaseTable::Orphan(uint64_t session) {
  int orphaned = 0;
  for (auto& [token, lease] : leases_) {
    if (lease.session == session && lease.phase != LeasePhase::kGranting) {
      lease.session = 0;
      ++orphaned;
    }
  }
  return orphaned;
}

void LeaseTable::RememberResult(const std::string& token, int64_t job_id,
                                JobState state) {
  if (recent_.emplace(token, Recent{job_id, state}).second) {
    recent_order_.push_back(token);
  }
  while (recent_order_.size() > kRecentResults) {
    recent_.erase(recent_order_.front());
    recent_order_.pop_front();
  }
}

const LeaseTable::Recent* LeaseTable::RecentResult(
    const std::string& token) const {
  auto it = recent_.find(token);
  return it == recent_.end() ? nullptr : &it->second;
}

bool LeaseTable::RetargetAck(const std::string& token, uint64_t session) {
  auto it = acks_.find(token);
  if (it == acks_.end()) return false;
  it->second = session;
  return true;
}

uint64_t LeaseTable::TakeAckTarget(const std::string& token) {
  auto it = acks_.find(token);
  if (it == acks_.end()) return 0;
  const uint64_t session = it->second;
  acks_.erase(it);
  return session;
}

}  // namespace ferry
