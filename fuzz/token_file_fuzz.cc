// Arbitrary text as an --auth_tokens file; what parses must format back
// to a line that parses to the same entry.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "auth/tokens.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::vector<ferry::TokenEntry>> entries =
      ferry::ParseTokenFile(
          absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!entries.ok()) return 0;
  for (const ferry::TokenEntry& entry : *entries) {
    absl::StatusOr<std::vector<ferry::TokenEntry>> again =
        ferry::ParseTokenFile(ferry::FormatTokenLine(entry));
    if (!again.ok() || again->size() != 1 ||
        ferry::FormatTokenLine((*again)[0]) != ferry::FormatTokenLine(entry)) {
      std::abort();  // a written line that does not read back the same
    }
  }
  return 0;
}
