#include "server/core/dispatcher.h"

#include <algorithm>
#include <climits>

namespace ferry {

void Dispatcher::AddReady(const std::string& queue, const ReadyKey& key) {
  queues_[queue].ready.insert(key);
}

void Dispatcher::EraseReady(const std::string& queue, const ReadyKey& key) {
  auto it = queues_.find(queue);
  if (it == queues_.end()) return;
  it->second.ready.erase(key);
  ForgetIfIdle(it);
}

void Dispatcher::SetPaused(const std::string& queue, bool paused) {
  auto it = queues_.try_emplace(queue).first;
  it->second.paused = paused;
  ForgetIfIdle(it);
}

std::optional<Dispatcher::Match> Dispatcher::Next(const std::string& name) {
  auto it = queues_.find(name);
  if (it == queues_.end()) return std::nullopt;
  QueueState& queue = it->second;
  std::optional<Match> match;
  if (!queue.paused && !queue.ready.empty()) {
    if (Taker* taker = PopHungry(name, queue)) {
      match = Match{taker, *queue.ready.begin()};
      queue.ready.erase(queue.ready.begin());
    }
  }
  ForgetIfIdle(it);
  return match;
}

Taker* Dispatcher::TakerForNewJob(const std::string& name) {
  auto it = queues_.find(name);
  if (it == queues_.end()) return nullptr;  // no taker waits on it
  QueueState& queue = it->second;
  if (queue.paused || !queue.ready.empty()) return nullptr;
  Taker* taker = PopHungry(name, queue);
  ForgetIfIdle(it);
  return taker;
}

void Dispatcher::ForgetIfIdle(Queues::iterator it) {
  const QueueState& queue = it->second;
  if (queue.ready.empty() && queue.hungry.empty() && !queue.paused) {
    queues_.erase(it);
  }
}

void Dispatcher::ForEachQueue(
    const std::function<void(const QueueView&)>& visit) const {
  for (const auto& [name, queue] : queues_) {
    // The oldest due job is the first of some priority: visit each
    // priority's first entry.
    int64_t oldest = INT64_MAX;
    for (auto it = queue.ready.begin(); it != queue.ready.end();
         it = queue.ready.lower_bound(
             ReadyKey{it->neg_priority + 1, INT64_MIN, INT64_MIN})) {
      oldest = std::min(oldest, it->run_at_us);
    }
    QueueView view{&name, queue.paused, std::nullopt};
    if (oldest != INT64_MAX) view.oldest_ready = absl::FromUnixMicros(oldest);
    visit(view);
  }
}

void Dispatcher::Register(Taker* taker) {
  taker->hungry_in.assign(taker->identity.queues.size(), false);
  takers_[taker->handle] = taker;
}

void Dispatcher::Unregister(uint64_t handle) { takers_.erase(handle); }

Taker* Dispatcher::Find(uint64_t handle) const {
  auto it = takers_.find(handle);
  return it == takers_.end() ? nullptr : it->second;
}

void Dispatcher::MarkHungry(Taker& taker) {
  if (taker.credits <= 0) return;
  for (size_t i = 0; i < taker.identity.queues.size(); ++i) {
    if (taker.hungry_in[i]) continue;
    queues_[taker.identity.queues[i]].hungry.push_back(taker.handle);
    taker.hungry_in[i] = true;
  }
}

Taker* Dispatcher::PopHungry(const std::string& name, QueueState& queue) {
  while (!queue.hungry.empty()) {
    const uint64_t handle = queue.hungry.front();
    queue.hungry.pop_front();
    auto it = takers_.find(handle);
    if (it == takers_.end()) continue;
    Taker& taker = *it->second;
    const auto& names = taker.identity.queues;
    const size_t index =
        std::find(names.begin(), names.end(), name) - names.begin();
    if (index < names.size()) taker.hungry_in[index] = false;
    if (taker.credits <= 0) continue;
    if (taker.credits > 1 && index < names.size()) {
      // Round robin: back of the line, still hungry.
      queue.hungry.push_back(handle);
      taker.hungry_in[index] = true;
    }
    return &taker;
  }
  return nullptr;
}

}  // namespace ferry
