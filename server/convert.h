#ifndef FERRY_SERVER_CONVERT_H_
#define FERRY_SERVER_CONVERT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ferry/v1/job.pb.h"
#include "ferry/v1/workers.pb.h"
#include "proto/time_util.h"
#include "server/core/events.h"
#include "storage/store.h"

namespace ferry {

// Between storage records and the public proto. The enum values are shared,
// so states convert by cast.
inline v1::JobState ToProto(JobState state) {
  return static_cast<v1::JobState>(state);
}
inline JobState FromProto(v1::JobState state) {
  return static_cast<JobState>(state);
}

// Fills `out`; `with_payload` also copies payload and result. Unset times
// stay unset.
void ToProto(const JobRecord& job, bool with_payload, v1::Job* out);

// The core's outbox in wire form. Moves the job (and its payload) out of
// an Assignment.
void ToProto(Assignment assignment, v1::Assignment* out);
v1::ServerMessage ToServerMessage(WorkerEvent event);
Progress FromProto(const v1::Progress& progress);
HeartbeatReport FromProto(const v1::Heartbeat& heartbeat);

std::string FormatJobId(int64_t id);
// Parses a job id ("123"); INVALID_ARGUMENT naming the bad value otherwise.
absl::StatusOr<int64_t> ParseJobId(absl::string_view id);

}  // namespace ferry

#endif  // FERRY_SERVER_CONVERT_H_
