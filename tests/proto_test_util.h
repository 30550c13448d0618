#ifndef FERRY_TESTS_PROTO_TEST_UTIL_H_
#define FERRY_TESTS_PROTO_TEST_UTIL_H_

// Proto helpers for tests that speak the API, whatever they link (the e2e
// tests link no server code).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "ferry/v1/job.pb.h"
#include "ferry/v1/jobs.pb.h"

namespace ferry::testing {

// A spec with the fields every job needs.
inline v1::JobSpec Spec(absl::string_view queue, absl::string_view kind,
                        absl::string_view payload = "") {
  v1::JobSpec spec;
  spec.set_queue(std::string(queue));
  spec.set_kind(std::string(kind));
  spec.set_payload(std::string(payload));
  return spec;
}

// A queue's job counts in field order: scheduled, queued, running,
// succeeded, failed, cancelled (to compare with ElementsAre).
inline std::vector<uint64_t> Counts(const v1::QueueInfo& info) {
  return {info.scheduled(), info.queued(), info.running(),
          info.succeeded(), info.failed(), info.cancelled()};
}

// The ids of a List page, in order.
inline std::vector<std::string> Ids(const v1::ListResponse& response) {
  std::vector<std::string> ids;
  for (const v1::Job& job : response.jobs()) ids.push_back(job.id());
  return ids;
}

}  // namespace ferry::testing

#endif  // FERRY_TESTS_PROTO_TEST_UTIL_H_
