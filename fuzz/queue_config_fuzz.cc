// Arbitrary text as a --queue_config file.

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "server/queue_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ferry::JobPolicy defaults;
  (void)ferry::ParseQueueConfig(
      absl::string_view(reinterpret_cast<const char*>(data), size), defaults);
  return 0;
}
