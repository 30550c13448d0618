#include "server/write_queue.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry {
namespace {

using Queue = WriteQueue<std::string>;

TEST(WriteQueueTest, PushLatestKeepsOneWaitingItemTheNewest) {
  Queue queue;
  std::string item;
  absl::Status status;
  bool more = false;
  queue.PushLatest("queued", 1);
  ASSERT_EQ(queue.Next(&item, &status, &more), Queue::Action::kWrite);
  EXPECT_EQ(item, "queued");
  // The reader is slow: a thousand updates arrive while one is in flight.
  for (int i = 1; i <= 1000; ++i) {
    queue.PushLatest("progress " + std::to_string(i), 1);
  }
  queue.PushLatest("succeeded", 1);
  EXPECT_EQ(queue.Next(&item, &status, &more), Queue::Action::kNothing)
      << "one write at a time";
  queue.Close(absl::OkStatus());
  queue.WriteDone(true);
  ASSERT_EQ(queue.Next(&item, &status, &more), Queue::Action::kWrite);
  EXPECT_EQ(item, "succeeded") << "only the newest waited";
  EXPECT_FALSE(more);
  queue.WriteDone(true);
  EXPECT_EQ(queue.Next(&item, &status, &more), Queue::Action::kFinish);
  EXPECT_TRUE(status.ok());
}

TEST(WriteQueueTest, PushLatestKeepsOrderUpToItsBoundThenTheNewestLast) {
  Queue queue;
  std::string item;
  absl::Status status;
  bool more = false;
  for (int i = 1; i <= 10; ++i) queue.PushLatest(std::to_string(i), 3);
  queue.Close(absl::OkStatus());
  std::vector<std::string> written;
  while (queue.Next(&item, &status, &more) == Queue::Action::kWrite) {
    written.push_back(item);
    queue.WriteDone(true);
  }
  EXPECT_THAT(written, ::testing::ElementsAre("1", "2", "10"));
}

TEST(WriteQueueTest, PushKeepsEveryItemUpToItsCap) {
  Queue queue(/*max_pending=*/3);
  EXPECT_TRUE(queue.Push("a"));
  EXPECT_TRUE(queue.Push("b"));
  EXPECT_TRUE(queue.Push("c"));
  EXPECT_FALSE(queue.Push("d")) << "the fourth overflows";
  std::string item;
  absl::Status status;
  bool more = false;
  EXPECT_EQ(queue.Next(&item, &status, &more), Queue::Action::kFinish);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
}

// Counts an item's length as its bytes.
size_t Length(const std::string& item) { return item.size(); }

TEST(WriteQueueTest, PushCountsBytesUntilTheyAreTaken) {
  Queue queue(/*max_pending=*/0, /*max_bytes=*/100, &Length);
  std::string item;
  absl::Status status;
  bool more = false;
  EXPECT_TRUE(queue.Push(std::string(60, 'a')));
  ASSERT_EQ(queue.Next(&item, &status, &more), Queue::Action::kWrite);
  // "a" is in flight, no longer waiting: 60 + 30 fit.
  EXPECT_TRUE(queue.Push(std::string(60, 'b')));
  EXPECT_TRUE(queue.Push(std::string(30, 'c')));
  EXPECT_FALSE(queue.Push(std::string(20, 'd'))) << "110 bytes would wait";
  queue.WriteDone(true);
  EXPECT_EQ(queue.Next(&item, &status, &more), Queue::Action::kFinish);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()),
              ::testing::HasSubstr("more than 100 bytes of messages"));
}

TEST(WriteQueueTest, OneItemOverTheByteCapStillGoes) {
  Queue queue(/*max_pending=*/0, /*max_bytes=*/100, &Length);
  EXPECT_TRUE(queue.Push(std::string(1000, 'x'))) << "nothing else waits";
}

TEST(WriteQueueTest, KeepsForTheCallerWhatWillNeverBeWritten) {
  Queue queue(/*max_pending=*/2, 0, nullptr, /*keep_dropped=*/true);
  std::string item;
  absl::Status status;
  bool more = false;
  ASSERT_TRUE(queue.Push("in flight"));
  ASSERT_EQ(queue.Next(&item, &status, &more), Queue::Action::kWrite);
  ASSERT_TRUE(queue.Push("a"));
  ASSERT_TRUE(queue.Push("b"));
  EXPECT_FALSE(queue.Push("c")) << "over the cap of 2";
  EXPECT_TRUE(queue.Push("d")) << "dropped quietly: the stream is closing";
  EXPECT_THAT(queue.TakeDropped(), ::testing::ElementsAre("a", "b", "c", "d"))
      << "the write in flight may arrive: not dropped";
  EXPECT_THAT(queue.TakeDropped(), ::testing::IsEmpty());

  Queue done(0, 0, nullptr, /*keep_dropped=*/true);
  ASSERT_TRUE(done.Push("never written"));
  done.SetDone();
  EXPECT_THAT(done.TakeDropped(), ::testing::ElementsAre("never written"));

  Queue plain(/*max_pending=*/1);
  ASSERT_TRUE(plain.Push("x"));
  EXPECT_FALSE(plain.Push("y"));
  EXPECT_THAT(plain.TakeDropped(), ::testing::IsEmpty()) << "not asked to";
}

TEST(WriteQueueTest, AbandonedWriteFinishesWithItsStatusOverAClose) {
  Queue queue;
  std::string item;
  absl::Status status;
  bool more = false;
  queue.Push("terminal");
  queue.Close(absl::OkStatus());
  ASSERT_EQ(queue.Next(&item, &status, &more), Queue::Action::kWrite);
  queue.AbandonWrite(absl::ResourceExhaustedError("over budget"));
  EXPECT_EQ(queue.Next(&item, &status, &more), Queue::Action::kFinish);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace ferry
