// Arbitrary bytes as a JobSpec (and, from the same bytes, a worker's
// queues and labels), through the validation every Submit and Hello runs.

#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"
#include "ferry/v1/job.pb.h"
#include "ferry/v1/workers.pb.h"
#include "server/validate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ferry::v1::JobSpec spec;
  if (spec.ParseFromArray(data, static_cast<int>(size))) {
    ferry::JobPolicy policy;
    (void)ferry::JobFromSpec(spec, policy, absl::FromUnixSeconds(1700000000));
    (void)ferry::ValidateLabels("labels", spec.labels());
  }
  ferry::v1::Hello hello;
  if (hello.ParseFromArray(data, static_cast<int>(size))) {
    (void)ferry::ValidateWorkerQueues("queues", hello.queues());
    (void)ferry::ValidateLabels("labels", hello.labels());
  }
  return 0;
}
