#ifndef FERRY_TESTS_LOG_CAPTURE_H_
#define FERRY_TESTS_LOG_CAPTURE_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "spdlog/sinks/base_sink.h"
#include "spdlog/spdlog.h"

namespace ferry::testing {

// Takes over spdlog's default logger while it lives and keeps each line
// written (from any thread); the previous logger comes back at the end of
// its scope, however the test leaves it.
class LogCapture {
 public:
  LogCapture()
      : previous_(spdlog::default_logger()), sink_(std::make_shared<Sink>()) {
    spdlog::set_default_logger(
        std::make_shared<spdlog::logger>("capture", sink_));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // The lines written so far, without their ends.
  std::vector<std::string> Lines() const { return sink_->Lines(); }
  std::string Text() const { return absl::StrJoin(Lines(), "\n"); }

 private:
  class Sink final : public spdlog::sinks::base_sink<std::mutex> {
   public:
    std::vector<std::string> Lines() {
      std::lock_guard<std::mutex> lock(mutex_);
      return lines_;
    }

   protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
      spdlog::memory_buf_t formatted;
      formatter_->format(msg, formatted);
      std::string line = fmt::to_string(formatted);
      while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
        line.pop_back();
      }
      lines_.push_back(std::move(line));
    }
    void flush_() override {}

   private:
    std::vector<std::string> lines_;
  };

  const std::shared_ptr<spdlog::logger> previous_;
  const std::shared_ptr<Sink> sink_;
};

}  // namespace ferry::testing

#endif  // FERRY_TESTS_LOG_CAPTURE_H_
