#ifndef FERRY_PROTO_BATCH_H_
#define FERRY_PROTO_BATCH_H_

// How a stream end bundles queued messages into one `batch` message
// (ServerMessage.batch from the broker, WorkerMessage.batch from a worker),
// once the other end has said it takes them.

#include <cstddef>
#include <deque>
#include <utility>

#include "proto/protocol_limits.h"

namespace ferry {

// Moves the next write from the non-empty `queue` into `*out`: the front
// message alone, or, when `batches` and more are queued, a batch of them
// up to the bounds above (the front always goes).
template <typename Message>
void TakeNextWrite(std::deque<Message>& queue, bool batches, Message* out) {
  if (!batches || queue.size() == 1) {
    *out = std::move(queue.front());
    queue.pop_front();
    return;
  }
  out->Clear();
  auto* messages = out->mutable_batch()->mutable_messages();
  size_t bytes = 0;
  while (!queue.empty() && messages->size() < kMaxBatchMessages) {
    bytes += queue.front().ByteSizeLong();
    if (!messages->empty() && bytes > kMaxBatchBytes) break;
    *messages->Add() = std::move(queue.front());
    queue.pop_front();
  }
}

}  // namespace ferry

#endif  // FERRY_PROTO_BATCH_H_
