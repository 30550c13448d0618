#include "client/cli_flags.h"

#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "proto/names.h"

namespace ferry {
namespace {

// Help lines put the text of every flag in one column, this far in.
constexpr size_t kHelpColumn = 23;

std::optional<absl::Duration> ParseDuration(absl::string_view text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration()) {
    return std::nullopt;
  }
  return d;
}

std::optional<v1::JobState> ParseState(absl::string_view text) {
  std::string name = absl::AsciiStrToUpper(text);
  if (!absl::StartsWith(name, "JOB_STATE_")) name = "JOB_STATE_" + name;
  v1::JobState state;
  if (!v1::JobState_Parse(name, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
    return std::nullopt;
  }
  return state;
}

// Whether `written` names the flag `name`: '_' and '-' are the same.
bool SameName(absl::string_view name, absl::string_view written) {
  if (name.size() != written.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char a = name[i] == '_' ? '-' : name[i];
    const char b = written[i] == '_' ? '-' : written[i];
    if (a != b) return false;
  }
  return true;
}

// Why `value` is not what `flag` wants; "" if it is.
std::string CheckValue(const Flag& flag, const std::string& value) {
  const std::string option = absl::StrCat("--", flag.name);
  switch (flag.type) {
    case FlagType::kSwitch:
    case FlagType::kString:
      return "";
    case FlagType::kAddress:
      return value.empty() ? option + " wants HOST:PORT" : "";
    case FlagType::kInt: {
      int32_t n;
      return absl::SimpleAtoi(value, &n) ? "" : option + " wants an integer";
    }
    case FlagType::kCount: {
      uint32_t n;
      return absl::SimpleAtoi(value, &n) && n > 0
                 ? ""
                 : option + " wants a positive integer";
    }
    case FlagType::kDuration:
      return ParseDuration(value)
                 ? ""
                 : option + " wants a duration like 30s, 5m, 2h";
    case FlagType::kTimeout: {
      std::optional<absl::Duration> d = ParseDuration(value);
      return d && *d > absl::ZeroDuration() && *d != absl::InfiniteDuration()
                 ? ""
                 : option + " wants a duration like 10s";
    }
    case FlagType::kTime: {
      absl::Time t;
      std::string error;
      return absl::ParseTime(absl::RFC3339_full, value, &t, &error)
                 ? ""
                 : absl::StrCat(
                       option,
                       " wants RFC 3339 (2026-01-02T15:04:05Z): ", error);
    }
    case FlagType::kState:
      return ParseState(value) ? "" : "unknown state " + value;
    case FlagType::kLabels: {
      auto label = ParseLabelFlag(value);
      return label.ok() ? "" : std::string(label.status().message());
    }
  }
  return "";
}

}  // namespace

const std::vector<std::string>* ParsedArgs::Values(
    absl::string_view name) const {
  auto it = values_.find(name);
  return it == values_.end() ? nullptr : &it->second;
}

bool ParsedArgs::Has(absl::string_view name) const {
  return Values(name) != nullptr;
}

std::string ParsedArgs::Get(absl::string_view name) const {
  const std::vector<std::string>* values = Values(name);
  return values == nullptr ? "" : values->back();
}

int64_t ParsedArgs::Int(absl::string_view name, int64_t fallback) const {
  int64_t n = fallback;
  if (Has(name)) (void)absl::SimpleAtoi(Get(name), &n);
  return n;
}

std::optional<absl::Duration> ParsedArgs::Duration(
    absl::string_view name) const {
  if (!Has(name)) return std::nullopt;
  return ParseDuration(Get(name));
}

std::optional<absl::Time> ParsedArgs::Time(absl::string_view name) const {
  absl::Time t;
  std::string error;
  if (!Has(name) || !absl::ParseTime(absl::RFC3339_full, Get(name), &t, &error))
    return std::nullopt;
  return t;
}

std::optional<v1::JobState> ParsedArgs::State(absl::string_view name) const {
  if (!Has(name)) return std::nullopt;
  return ParseState(Get(name));
}

std::map<std::string, std::string> ParsedArgs::Labels(
    absl::string_view name) const {
  std::map<std::string, std::string> labels;
  if (const std::vector<std::string>* items = Values(name)) {
    for (const std::string& item : *items) {
      auto label = ParseLabelFlag(item);
      if (label.ok()) labels[label->first] = std::move(label->second);
    }
  }
  return labels;
}

std::optional<FlagError> ParseFlags(const std::vector<std::string>& args,
                                    size_t* next,
                                    const std::vector<Flag>& flags, StopAt stop,
                                    ParsedArgs* parsed) {
  for (size_t& i = *next; i < args.size(); ++i) {
    const std::string& arg = args[i];
    const bool is_option = absl::StartsWith(arg, "--");
    if (!is_option && stop == StopAt::kPositional) return std::nullopt;
    if (arg == "--" && stop == StopAt::kEnd) {
      for (++i; i < args.size(); ++i) parsed->positional.push_back(args[i]);
      return std::nullopt;
    }
    if (!is_option) {
      parsed->positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const Flag* flag = nullptr;
    for (const Flag& f : flags) {
      if (SameName(f.name, name)) flag = &f;
    }
    const auto error = [&](FlagError::Kind kind, std::string message) {
      return FlagError{kind, arg, name, std::move(message)};
    };
    if (flag == nullptr) {
      return error(FlagError::Kind::kUnknown,
                   absl::StrCat("unknown option --", name));
    }
    name = flag->name;  // as the table spells it, in errors too
    if (flag->type == FlagType::kSwitch) {
      if (value) {
        return error(FlagError::Kind::kSyntax,
                     absl::StrCat("--", name, " takes no value"));
      }
      value = "true";
    } else if (!value) {
      if (i + 1 >= args.size()) {
        return error(FlagError::Kind::kSyntax,
                     absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (flag->type != FlagType::kLabels && parsed->Has(flag->name)) {
      return error(FlagError::Kind::kSyntax,
                   absl::StrCat("--", name, " given twice"));
    }
    if (std::string why = CheckValue(*flag, *value); !why.empty()) {
      return error(FlagError::Kind::kBadValue, std::move(why));
    }
    parsed->values_[flag->name].push_back(*std::move(value));
  }
  return std::nullopt;
}

std::string FlagHelp(const std::vector<Flag>& flags) {
  std::string help;
  for (const Flag& flag : flags) {
    if (flag.help.empty()) continue;
    std::string head = absl::StrCat("--", flag.name);
    if (!flag.value_name.empty()) absl::StrAppend(&head, " ", flag.value_name);
    head.resize(std::max(head.size() + 1, kHelpColumn), ' ');
    absl::StrAppend(&help, "  ", head, flag.help, "\n");
  }
  return help;
}

}  // namespace ferry
