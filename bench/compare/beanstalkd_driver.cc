// ferry-compare-beanstalkd: the ferry-bench e2e workload against beanstalkd,
// over its text protocol (doc/protocol.txt in beanstalkd's sources).
//
//   producer:  put <pri> 0 <ttr> <bytes>\r\n<payload>\r\n   -> INSERTED <id>
//   worker:    reserve-with-timeout 1\r\n                  -> RESERVED <id>
//   <bytes>\r\n<payload>\r\n
//              delete <id>\r\n                            -> DELETED
//
// One request in flight per connection, as beanstalkd's client libraries
// do. Durability is the server's setting (-b DIR -f 0: binlog, fsync before
// every reply), not the driver's. See README.md.

#include "bench/compare/compare_common.h"

namespace compare {
namespace {

const char* kUsage =
    "ferry-compare-beanstalkd: ferry-bench's e2e workload against beanstalkd.\n"
    "  --tube=NAME                    tube (default: a fresh one per run)\n";

// Finds "\r\n" in data[0, len); returns the index of '\r' or -1.
long FindCrlf(const char* data, size_t len) {
  const void* p = memmem(data, len, "\r\n", 2);
  return p ? static_cast<const char*>(p) - data : -1;
}

class BeanstalkConn : public StreamConn {
 public:
  BeanstalkConn(const Options& o, Ledger* ledger, const std::string& tube,
                bool producer)
      : StreamConn(Dial(o.host, o.port)),
        o_(o),
        ledger_(ledger),
        producer_(producer) {
    // Setup before the clock starts.
    const std::string reply =
        producer ? BlockingCall("use " + tube + "\r\n", EndsWithCrlf)
                 : BlockingCall("watch " + tube + "\r\nignore default\r\n",
                                TwoLines);
    if (producer ? reply != "USING " + tube + "\r\n"
                 : reply != "WATCHING 2\r\nWATCHING 1\r\n") {
      Die("beanstalkd: unexpected setup reply: %s", reply.c_str());
    }
  }

  void Start() override {
    if (producer_) {
      PutNext();
    } else {
      Reserve();
    }
  }

 protected:
  const char* name() const override { return "beanstalkd"; }

  size_t Parse(const char* data, size_t len) override {
    const long eol = FindCrlf(data, len);
    if (eol < 0) return 0;
    const size_t line_len = static_cast<size_t>(eol) + 2;
    if (producer_) {
      if (!StartsWith(data, eol, "INSERTED "))
        Die("beanstalkd: put: %.*s", int(eol), data);
      ledger_->Submitted();
      PutNext();
      return line_len;
    }
    if (StartsWith(data, eol, "RESERVED ")) {
      unsigned long long id = 0, bytes = 0;
      std::string line(data, static_cast<size_t>(eol));
      if (std::sscanf(line.c_str(), "RESERVED %llu %llu", &id, &bytes) != 2) {
        Die("beanstalkd: bad reply %s", line.c_str());
      }
      const size_t total = line_len + bytes + 2;
      if (len < total) return 0;  // the body is not all here yet
      ledger_->Received(ParsePayload(data + line_len, bytes), "beanstalkd");
      // The no-op handler ran; acknowledge.
      char cmd[64];
      const int n = std::snprintf(cmd, sizeof(cmd), "delete %llu\r\n", id);
      Send(cmd, static_cast<size_t>(n));
      return total;
    }
    if (StartsWith(data, eol, "DELETED")) {
      ledger_->Completed();
      Reserve();
      return line_len;
    }
    if (StartsWith(data, eol, "TIMED_OUT")) {
      Reserve();
      return line_len;
    }
    Die("beanstalkd: unexpected reply: %.*s", int(eol), data);
  }

 private:
  static bool StartsWith(const char* data, long len, const char* prefix) {
    const size_t n = std::strlen(prefix);
    return static_cast<size_t>(len) >= n && std::memcmp(data, prefix, n) == 0;
  }
  static bool EndsWithCrlf(const std::string& s) {
    return s.size() >= 2 && s.compare(s.size() - 2, 2, "\r\n") == 0;
  }
  static bool TwoLines(const std::string& s) {
    const size_t first = s.find("\r\n");
    return first != std::string::npos &&
           s.find("\r\n", first + 2) != std::string::npos;
  }

  void PutNext() {
    const int64_t index = ledger_->Claim();
    if (index < 0) return;  // this producer is done
    const std::string payload = MakePayload(index, o_.payload_bytes);
    char head[64];
    const int n = std::snprintf(head, sizeof(head), "put 1024 0 60 %zu\r\n",
                                payload.size());
    std::string cmd;
    cmd.reserve(static_cast<size_t>(n) + payload.size() + 2);
    cmd.append(head, static_cast<size_t>(n)).append(payload).append("\r\n");
    Send(cmd);
  }
  void Reserve() {
    static const char kReserve[] = "reserve-with-timeout 1\r\n";
    Send(kReserve, sizeof(kReserve) - 1);
  }

  const Options& o_;
  Ledger* ledger_;
  const bool producer_;
};

// "OK <bytes>\r\n<yaml>\r\n" is complete.
bool YamlComplete(const std::string& s) {
  const size_t eol = s.find("\r\n");
  if (eol == std::string::npos) return false;
  if (s.compare(0, 3, "OK ") != 0) return true;  // an error line
  return s.size() >= eol + 2 + std::stoul(s.substr(3, eol - 3)) + 2;
}

// The value of `key` in a stats reply, or "".
std::string StatValue(const std::string& yaml, const std::string& key) {
  const size_t at = yaml.find("\n" + key + ": ");
  if (at == std::string::npos) return "";
  const size_t start = at + key.size() + 3;
  return yaml.substr(start, yaml.find('\n', start) - start);
}

// "1.12" (stats quote the version) -> 1.12.
std::string Unquote(std::string s) {
  s.erase(std::remove(s.begin(), s.end(), '"'), s.end());
  return s;
}

int Main(int argc, char** argv) {
  Flags flags(argc, argv);
  Options o = ParseCommon(flags, "beanstalkd", 11300);
  std::string tube = flags.Str("tube", "");
  flags.CheckAllKnown((std::string(kUsage) + kCommonUsage).c_str());
  if (tube.empty())
    tube = "bench-" + std::to_string(getpid()) + "-" +
           std::to_string(NowUs() % 1000000);

  Ledger ledger(o.jobs);
  std::vector<std::unique_ptr<Conn>> conns;
  for (int i = 0; i < o.workers; ++i) {
    conns.push_back(std::make_unique<BeanstalkConn>(o, &ledger, tube, false));
  }
  for (int i = 0; i < o.producers; ++i) {
    conns.push_back(std::make_unique<BeanstalkConn>(o, &ledger, tube, true));
  }
  return RunAndReport(o, ledger, conns, [&] {
    // Nothing may be left in the tube; report whether the binlog was written.
    const int fd = Dial(o.host, o.port);
    const std::string tube_stats =
        Roundtrip(fd, "stats-tube " + tube + "\r\n", YamlComplete);
    const std::string stats = Roundtrip(fd, "stats\r\n", YamlComplete);
    close(fd);
    for (const char* key : {"current-jobs-ready", "current-jobs-reserved",
                            "current-jobs-delayed"}) {
      if (StatValue(tube_stats, key) != "0") {
        Die("beanstalkd: %s is %s after the run", key,
            StatValue(tube_stats, key).c_str());
      }
    }
    return ",\"binlog_records_written\":" +
           StatValue(stats, "binlog-records-written") +
           ",\"server_version\":\"" + Unquote(StatValue(stats, "version")) +
           "\"";
  });
}

}  // namespace
}  // namespace compare

int main(int argc, char** argv) { return compare::Main(argc, argv); }
