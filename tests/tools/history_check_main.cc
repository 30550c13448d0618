// ferry-history-check: holds the histories a load run recorded (see
// tests/tools/history.h) against the database ferryd left, and prints
// what it found. Exit 0: no violation; 1: violations; 2: usage or input
// error. ferryd must be stopped (the database is opened as ferryd would).
//
//   ferry-history-check --db=PATH HISTORY_FILE...

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "storage/sqlite/sqlite_store.h"
#include "tests/tools/history.h"

ABSL_FLAG(std::string, db, "", "The database ferryd used (required).");
ABSL_FLAG(int, list, 20, "Violations listed in full; the rest are counted.");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Checks recorded histories against ferryd's final database.\n"
      "  ferry-history-check --db=PATH HISTORY_FILE...");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string db = absl::GetFlag(FLAGS_db);
  if (db.empty() || args.size() < 2) {
    std::fprintf(stderr,
                 "ferry-history-check: give --db=PATH and at least one "
                 "history file\n");
    return 2;
  }
  const std::vector<std::string> paths(args.begin() + 1, args.end());
  absl::StatusOr<std::vector<ferry::history::Event>> history =
      ferry::history::ReadHistory(paths);
  if (!history.ok()) {
    std::fprintf(stderr, "ferry-history-check: %s\n",
                 std::string(history.status().message()).c_str());
    return 2;
  }
  ferry::SqliteOptions options;
  options.path = db;
  absl::StatusOr<std::unique_ptr<ferry::SqliteStore>> store =
      ferry::OpenSqliteStore(options);
  if (!store.ok()) {
    std::fprintf(stderr, "ferry-history-check: %s\n",
                 std::string(store.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<std::vector<ferry::history::FinalJob>> jobs =
      ferry::history::ReadFinalJobs(**store);
  if (!jobs.ok()) {
    std::fprintf(stderr, "ferry-history-check: %s\n",
                 std::string(jobs.status().message()).c_str());
    return 2;
  }
  const ferry::history::Report report = ferry::history::Check(*history, *jobs);
  std::fputs(
      ferry::history::FormatReport(report, absl::GetFlag(FLAGS_list)).c_str(),
      stdout);
  return report.violations.empty() ? 0 : 1;
}
