#ifndef FERRY_BASE_CONFIG_LINES_H_
#define FERRY_BASE_CONFIG_LINES_H_

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace ferry {

// One meaningful line of a line-based config file (--queue_config,
// ferry-worker --handlers): its 1-based number, the line trimmed, and its
// words (split on spaces and tabs). Views into the text given.
struct ConfigLine {
  int number = 0;
  absl::string_view text;
  std::vector<absl::string_view> words;
};

// The lines of `text` that are neither blank nor '#' comments.
inline std::vector<ConfigLine> ConfigLines(absl::string_view text) {
  std::vector<ConfigLine> lines;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    lines.push_back(ConfigLine{
        number, line,
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty())});
  }
  return lines;
}

}  // namespace ferry

#endif  // FERRY_BASE_CONFIG_LINES_H_
