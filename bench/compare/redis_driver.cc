// ferry-compare-redis: the ferry-bench e2e workload against Redis, with the
// reliable-queue pattern
// (https://redis.io/commands/lmove/#pattern-reliable-queue):
//
//   producer:  LPUSH <queue> <payload>                                  ->
//   (integer) worker:    BLMOVE <queue> <queue>:processing:<w> RIGHT LEFT 1 ->
//   payload | nil
//              LREM <queue>:processing:<w> 1 <payload>                  ->
//              (integer) 1
//
// Commands are formatted and replies parsed with hiredis; the sockets are
// driven by the shared epoll loop, one command in flight per connection
// (no pipelining). Durability is the server's setting (appendonly yes,
// appendfsync always: the AOF is fsynced before replies are sent).

#include <hiredis/hiredis.h>

#include "bench/compare/compare_common.h"

namespace compare {
namespace {

const char* kUsage =
    "ferry-compare-redis: ferry-bench's e2e workload against Redis (reliable "
    "queue).\n"
    "  --queue=NAME                   list key (default: a fresh one per "
    "run)\n";

class RedisConn : public StreamConn {
 public:
  // worker < 0: a producer.
  RedisConn(const Options& o, Ledger* ledger, const std::string& queue,
            int worker)
      : StreamConn(Dial(o.host, o.port)),
        o_(o),
        ledger_(ledger),
        queue_(queue),
        processing_(queue + ":processing:" + std::to_string(worker)),
        producer_(worker < 0),
        reader_(redisReaderCreate()) {
    if (reader_ == nullptr) Die("redisReaderCreate failed");
    // Setup before the clock starts: check the server answers.
    const std::string reply =
        BlockingCall("PING\r\n", [](const std::string& s) {
          return s.size() >= 2 && s.compare(s.size() - 2, 2, "\r\n") == 0;
        });
    if (reply != "+PONG\r\n")
      Die("redis: unexpected reply to PING: %s", reply.c_str());
  }
  ~RedisConn() override { redisReaderFree(reader_); }

  struct Settings {
    std::string appendonly, appendfsync, version;
  };
  // CONFIG GET appendonly / appendfsync and the server's version (hiredis'
  // blocking API; before the clock starts).
  static Settings ReadSettings(const Options& o) {
    redisContext* c = redisConnect(o.host.c_str(), o.port);
    if (c == nullptr || c->err) Die("redis: connect failed");
    Settings s;
    for (auto [name, out] : {std::make_pair("appendonly", &s.appendonly),
                             std::make_pair("appendfsync", &s.appendfsync)}) {
      auto* r =
          static_cast<redisReply*>(redisCommand(c, "CONFIG GET %s", name));
      if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        Die("redis: CONFIG GET %s failed", name);
      out->assign(r->element[1]->str, r->element[1]->len);
      freeReplyObject(r);
    }
    auto* r = static_cast<redisReply*>(redisCommand(c, "INFO server"));
    if (r == nullptr || r->type != REDIS_REPLY_STRING)
      Die("redis: INFO failed");
    const std::string info(r->str, r->len);
    freeReplyObject(r);
    const size_t at = info.find("redis_version:");
    if (at != std::string::npos)
      s.version = info.substr(at + 14, info.find('\r', at) - at - 14);
    redisFree(c);
    return s;
  }

  void Start() override {
    if (producer_) {
      PushNext();
    } else {
      Move();
    }
  }

 protected:
  const char* name() const override { return "redis"; }

  // Feeds hiredis' reader and handles every complete reply.
  size_t Parse(const char* data, size_t len) override {
    if (redisReaderFeed(reader_, data, len) != REDIS_OK)
      Die("redis: reader: %s", reader_->errstr);
    for (;;) {
      void* raw = nullptr;
      if (redisReaderGetReply(reader_, &raw) != REDIS_OK)
        Die("redis: reader: %s", reader_->errstr);
      if (raw == nullptr) break;
      Handle(static_cast<redisReply*>(raw));
      freeReplyObject(raw);
    }
    return len;
  }

 private:
  enum class State { kPush, kMove, kRem };

  void Handle(const redisReply* r) {
    if (r->type == REDIS_REPLY_ERROR) Die("redis: error reply: %s", r->str);
    switch (state_) {
      case State::kPush:
        if (r->type != REDIS_REPLY_INTEGER)
          Die("redis: LPUSH: unexpected reply type %d", r->type);
        ledger_->Submitted();
        PushNext();
        return;
      case State::kMove:
        if (r->type == REDIS_REPLY_NIL) {  // timed out on an empty queue
          Move();
          return;
        }
        if (r->type != REDIS_REPLY_STRING)
          Die("redis: BLMOVE: unexpected reply type %d", r->type);
        ledger_->Received(ParsePayload(r->str, r->len), "redis");
        // The no-op handler ran; acknowledge by removing it from processing.
        current_.assign(r->str, r->len);
        Command("LREM %s 1 %b", processing_.c_str(), current_.data(),
                current_.size());
        state_ = State::kRem;
        return;
      case State::kRem:
        if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
          Die("redis: LREM removed %lld elements, expected 1", r->integer);
        }
        ledger_->Completed();
        Move();
        return;
    }
  }

  void PushNext() {
    const int64_t index = ledger_->Claim();
    if (index < 0) return;  // this producer is done
    const std::string payload = MakePayload(index, o_.payload_bytes);
    state_ = State::kPush;
    Command("LPUSH %s %b", queue_.c_str(), payload.data(), payload.size());
  }
  void Move() {
    state_ = State::kMove;
    Command("BLMOVE %s %s RIGHT LEFT 1", queue_.c_str(), processing_.c_str());
  }
  void Command(const char* format, ...) {
    va_list args;
    va_start(args, format);
    char* cmd = nullptr;
    const int n = redisvFormatCommand(&cmd, format, args);
    va_end(args);
    if (n < 0) Die("redis: cannot format %s", format);
    Send(cmd, static_cast<size_t>(n));
    redisFreeCommand(cmd);
  }

  const Options& o_;
  Ledger* ledger_;
  const std::string queue_;
  const std::string processing_;
  const bool producer_;
  redisReader* reader_;
  State state_ = State::kPush;
  std::string current_;
};

int Main(int argc, char** argv) {
  Flags flags(argc, argv);
  Options o = ParseCommon(flags, "redis", 6379);
  std::string queue = flags.Str("queue", "");
  flags.CheckAllKnown((std::string(kUsage) + kCommonUsage).c_str());
  if (queue.empty())
    queue = "bench-" + std::to_string(getpid()) + "-" +
            std::to_string(NowUs() % 1000000);

  Ledger ledger(o.jobs);
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < o.workers; ++i) {
    conns.push_back(std::make_unique<RedisConn>(o, &ledger, queue, i));
  }
  for (int i = 0; i < o.producers; ++i) {
    conns.push_back(std::make_unique<RedisConn>(o, &ledger, queue, -1));
  }
  // The settings in force, read before the run.
  RedisConn::Settings settings = RedisConn::ReadSettings(o);
  return RunAndReport(o, ledger, conns, [&] {
    // Nothing may be left queued or processing.
    redisContext* c = redisConnect(o.host.c_str(), o.port);
    if (c == nullptr || c->err)
      Die("redis: connect for the final check failed");
    for (int i = -1; i < o.workers; ++i) {
      const std::string key =
          i < 0 ? queue : queue + ":processing:" + std::to_string(i);
      auto* r =
          static_cast<redisReply*>(redisCommand(c, "LLEN %s", key.c_str()));
      if (r == nullptr || r->type != REDIS_REPLY_INTEGER)
        Die("redis: LLEN failed");
      if (r->integer != 0)
        Die("redis: %s holds %lld jobs after the run", key.c_str(), r->integer);
      freeReplyObject(r);
    }
    redisFree(c);
    return ",\"appendonly\":\"" + settings.appendonly +
           "\",\"appendfsync\":\"" + settings.appendfsync +
           "\",\"server_version\":\"" + settings.version + "\"";
  });
}

}  // namespace
}  // namespace compare

int main(int argc, char** argv) { return compare::Main(argc, argv); }
