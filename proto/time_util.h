#ifndef FERRY_PROTO_TIME_UTIL_H_
#define FERRY_PROTO_TIME_UTIL_H_

// absl time <-> google.protobuf.Timestamp / Duration, for every side that
// speaks the proto (server, client, worker).

#include <cstdint>

#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace ferry {

inline void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t micros = absl::ToUnixMicros(t);
  int64_t seconds = micros / 1000000;
  int64_t rest = micros % 1000000;
  if (rest < 0) {
    rest += 1000000;
    --seconds;
  }
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(rest * 1000));
}

inline void ToProto(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t nanos = absl::ToInt64Nanoseconds(d);
  out->set_seconds(nanos / 1000000000);
  out->set_nanos(static_cast<int32_t>(nanos % 1000000000));
}

inline google::protobuf::Timestamp TimestampProto(absl::Time t) {
  google::protobuf::Timestamp out;
  ToProto(t, &out);
  return out;
}

inline google::protobuf::Duration DurationProto(absl::Duration d) {
  google::protobuf::Duration out;
  ToProto(d, &out);
  return out;
}

inline absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

inline absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

}  // namespace ferry

#endif  // FERRY_PROTO_TIME_UTIL_H_
