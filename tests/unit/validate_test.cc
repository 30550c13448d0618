// Request validation (names, labels, JobFromSpec) and the conversions
// between storage records and the public proto (ids, times, durations).

#include "server/validate.h"

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "ferry/v1/job.pb.h"
#include "gmock/gmock.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "gtest/gtest.h"
#include "proto/names.h"
#include "server/convert.h"
#include "storage/store.h"
#include "tests/status_matchers.h"
#include "tests/store_test_util.h"

namespace ferry::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const absl::Time kNow = absl::FromUnixSeconds(1800000000);

// ------------------------------------------------------------ ValidateName

TEST(ValidateName, AcceptsLettersDigitsAndPunctuationAfterTheFirst) {
  EXPECT_THAT(ValidateName("queue", "emails"), IsOk());
  EXPECT_THAT(ValidateName("queue", "a"), IsOk());
  EXPECT_THAT(ValidateName("queue", "7"), IsOk());
  EXPECT_THAT(ValidateName("queue", "Img.resize_v2:high-prio"), IsOk());
  EXPECT_THAT(ValidateName("queue", std::string(kMaxNameLength, 'x')), IsOk());
}

TEST(ValidateName, EmptyNameIsRequired) {
  EXPECT_THAT(ValidateName("queue", ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("queue is required")));
}

TEST(ValidateName, TooLongNameIsRejected) {
  EXPECT_THAT(
      ValidateName("kind", std::string(kMaxNameLength + 1, 'x')),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kind \"xxxx")));
  EXPECT_THAT(ValidateName("label key", std::string(10, 'k'), 9),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("use 1-9 characters")));
}

TEST(ValidateName, FirstCharacterMustBeALetterOrDigit) {
  for (const char* name : {"-q", "_q", ".q", ":q"}) {
    EXPECT_THAT(ValidateName("queue", name),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("starting with a letter or digit")))
        << name;
  }
}

TEST(ValidateName, OtherCharactersAreRejected) {
  for (const char* name : {"a b", "a/b", "a@b", "a\nb", "é", "a*", "q\t"}) {
    EXPECT_THAT(
        ValidateName("queue", name),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("queue \"")))
        << name;
  }
  EXPECT_THAT(ValidateName("queue", absl::string_view("a\0b", 3)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ValidateName, ErrorQuotesAtMost64CharactersEscaped) {
  absl::Status status = ValidateName("queue", std::string(200, '\n'));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument,
                               HasSubstr("\\n\\n...\"")));
  EXPECT_LT(status.message().size(), 400u);
}

// ---------------------------------------------------------- ParseLabelFlag

TEST(ParseLabelFlag, SplitsAtTheFirstEquals) {
  EXPECT_THAT(
      ParseLabelFlag("tenant=acme"),
      IsOkAndHolds(std::make_pair(std::string("tenant"), std::string("acme"))));
  EXPECT_THAT(
      ParseLabelFlag("expr=a=b"),
      IsOkAndHolds(std::make_pair(std::string("expr"), std::string("a=b"))));
  EXPECT_THAT(
      ParseLabelFlag("empty="),
      IsOkAndHolds(std::make_pair(std::string("empty"), std::string(""))));
}

TEST(ParseLabelFlag, NoEqualsOrNoKeyIsInvalidAndQuotesTheItem) {
  EXPECT_THAT(ParseLabelFlag("novalue"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("--label wants key=value, got \"novalue\"")));
  EXPECT_THAT(ParseLabelFlag("=x"), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("\"=x\"")));
  EXPECT_THAT(ParseLabelFlag(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

// ---------------------------------------------------------- ValidateLabels

google::protobuf::Map<std::string, std::string> Labels(
    std::vector<std::pair<std::string, std::string>> entries) {
  google::protobuf::Map<std::string, std::string> labels;
  for (auto& [key, value] : entries) labels[key] = value;
  return labels;
}

TEST(ValidateLabels, AcceptsUpToTheLimit) {
  EXPECT_THAT(ValidateLabels("label", Labels({})), IsOk());
  google::protobuf::Map<std::string, std::string> many;
  for (int i = 0; i < kMaxLabels; ++i) many[absl::StrCat("k", i)] = "v";
  EXPECT_THAT(ValidateLabels("label", many), IsOk());
  EXPECT_THAT(
      ValidateLabels("label", Labels({{std::string(kMaxLabelKeyLength, 'k'),
                                       std::string(kMaxLabelValueLength, 'v')},
                                      {"empty", ""},
                                      {"utf8", "h\xc3\xa9llo w\xc3\xb6rld"}})),
      IsOk());
}

TEST(ValidateLabels, TooManyLabelsAreRejected) {
  google::protobuf::Map<std::string, std::string> many;
  for (int i = 0; i <= kMaxLabels; ++i) many[absl::StrCat("k", i)] = "v";
  EXPECT_THAT(ValidateLabels("label", many),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("too many labels: 33; at most 32")));
}

TEST(ValidateLabels, KeysFollowTheNameRulesWithTheirOwnLength) {
  EXPECT_THAT(ValidateLabels("label", Labels({{"", "v"}})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("label key is required")));
  EXPECT_THAT(ValidateLabels("label", Labels({{"a=b", "v"}})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("label key \"a=b\"")));
  EXPECT_THAT(
      ValidateLabels("label",
                     Labels({{std::string(kMaxLabelKeyLength + 1, 'k'), "v"}})),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("label key")));
}

TEST(ValidateLabels, ValuesAreShortAndPrintable) {
  EXPECT_THAT(
      ValidateLabels(
          "label",
          Labels({{"team", std::string(kMaxLabelValueLength + 1, 'v')}})),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("label team has an invalid value")));
  for (const char* value : {"a\nb", "tab\there", "bell\a", "del\x7f"}) {
    EXPECT_THAT(ValidateLabels("label", Labels({{"team", value}})),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("no control characters")))
        << value;
  }
}

// ------------------------------------------------------------- JobFromSpec

v1::JobSpec Spec() {
  v1::JobSpec spec;
  spec.set_queue("emails");
  spec.set_kind("send");
  spec.set_payload("hello");
  return spec;
}

JobPolicy Policy() {
  JobPolicy policy;
  policy.lease_ttl = absl::Seconds(45);
  policy.max_attempts = 7;
  policy.initial_backoff = absl::Seconds(3);
  policy.max_backoff = absl::Minutes(10);
  policy.max_payload_bytes = 100;
  return policy;
}

TEST(JobFromSpec, FillsUnsetFieldsFromThePolicy) {
  v1::JobSpec spec = Spec();
  spec.set_content_type("text/plain");
  (*spec.mutable_labels())["team"] = "growth";
  spec.set_priority(-3);
  spec.set_idempotency_key("key-1");

  absl::StatusOr<JobRecord> job = JobFromSpec(spec, Policy(), kNow);

  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->id, 0);
  EXPECT_EQ(job->queue, "emails");
  EXPECT_EQ(job->kind, "send");
  EXPECT_EQ(job->payload, "hello");
  EXPECT_EQ(job->content_type, "text/plain");
  EXPECT_EQ(job->labels, (ferry::Labels{{"team", "growth"}}));
  EXPECT_EQ(job->priority, -3);
  EXPECT_EQ(job->idempotency_key, "key-1");
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->run_at, kNow);
  EXPECT_EQ(job->created_at, kNow);
  EXPECT_EQ(job->updated_at, kNow);
  EXPECT_EQ(job->started_at, absl::InfinitePast());
  EXPECT_EQ(job->finished_at, absl::InfinitePast());
  EXPECT_EQ(job->attempt, 0);
  EXPECT_EQ(job->max_attempts, 7);
  EXPECT_EQ(job->initial_backoff, absl::Seconds(3));
  EXPECT_EQ(job->max_backoff, absl::Minutes(10));
  EXPECT_EQ(job->lease_ttl, absl::Seconds(45));
  EXPECT_EQ(job->timeout, absl::ZeroDuration());
  EXPECT_THAT(job->lease_token, IsEmpty());
}

TEST(JobFromSpec, SpecValuesOverrideThePolicy) {
  v1::JobSpec spec = Spec();
  spec.mutable_retry()->set_max_attempts(2);
  spec.mutable_retry()->mutable_initial_backoff()->set_seconds(5);
  spec.mutable_retry()->mutable_max_backoff()->set_seconds(50);
  spec.mutable_lease_ttl()->set_seconds(90);
  spec.mutable_timeout()->set_seconds(600);

  absl::StatusOr<JobRecord> job = JobFromSpec(spec, Policy(), kNow);

  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->max_attempts, 2);
  EXPECT_EQ(job->initial_backoff, absl::Seconds(5));
  EXPECT_EQ(job->max_backoff, absl::Seconds(50));
  EXPECT_EQ(job->lease_ttl, absl::Seconds(90));
  EXPECT_EQ(job->timeout, absl::Minutes(10));
}

TEST(JobFromSpec, MaxBackoffIsNeverBelowInitialBackoff) {
  v1::JobSpec spec = Spec();
  spec.mutable_retry()->mutable_initial_backoff()->set_seconds(3600);
  absl::StatusOr<JobRecord> job = JobFromSpec(spec, Policy(), kNow);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->initial_backoff, absl::Hours(1));
  EXPECT_EQ(job->max_backoff, absl::Hours(1));
}

TEST(JobFromSpec, RunAtInThePastIsQueuedNow) {
  v1::JobSpec spec = Spec();
  ToProto(kNow - absl::Hours(1), spec.mutable_run_at());
  absl::StatusOr<JobRecord> job = JobFromSpec(spec, Policy(), kNow);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->state, JobState::kQueued);
  EXPECT_EQ(job->run_at, kNow);

  spec.mutable_run_at()->set_seconds(0);  // 1970
  job = JobFromSpec(spec, Policy(), kNow);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->run_at, kNow);
}

TEST(JobFromSpec, RunAtInTheFutureIsScheduledForThen) {
  v1::JobSpec spec = Spec();
  ToProto(kNow + absl::Minutes(5), spec.mutable_run_at());
  absl::StatusOr<JobRecord> job = JobFromSpec(spec, Policy(), kNow);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->state, JobState::kScheduled);
  EXPECT_EQ(job->run_at, kNow + absl::Minutes(5));
}

TEST(JobFromSpec, DelayIsScheduledThatLongFromNow) {
  v1::JobSpec spec = Spec();
  spec.mutable_delay()->set_seconds(30);
  absl::StatusOr<JobRecord> job = JobFromSpec(spec, Policy(), kNow);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->state, JobState::kScheduled);
  EXPECT_EQ(job->run_at, kNow + absl::Seconds(30));
  EXPECT_EQ(job->created_at, kNow);

  spec.mutable_delay()->set_seconds(0);
  job = JobFromSpec(spec, Policy(), kNow);
  ASSERT_THAT(job, IsOk());
  EXPECT_EQ(job->state, JobState::kQueued);
}

TEST(JobFromSpec, LimitsAreInclusive) {
  v1::JobSpec spec = Spec();
  spec.set_payload(std::string(100, 'p'));  // Policy().max_payload_bytes
  spec.set_content_type(std::string(kMaxContentTypeLength, 'c'));
  spec.set_priority(kMaxPriority);
  spec.mutable_retry()->set_max_attempts(kMaxAttempts);
  spec.mutable_lease_ttl()->set_seconds(absl::ToInt64Seconds(kMaxLeaseTtl));
  spec.mutable_delay()->set_seconds(absl::ToInt64Seconds(kMaxDelay));
  spec.set_idempotency_key(std::string(kMaxIdempotencyKeyLength, 'i'));
  EXPECT_THAT(JobFromSpec(spec, Policy(), kNow), IsOk());

  spec.set_priority(-kMaxPriority);
  spec.mutable_lease_ttl()->set_seconds(absl::ToInt64Seconds(kMinLeaseTtl));
  EXPECT_THAT(JobFromSpec(spec, Policy(), kNow), IsOk());
}

// One field out of bounds, and the name the error must mention.
struct BadSpec {
  const char* test_name;
  std::function<void(v1::JobSpec&)> spoil;
  const char* field;
};

void PrintTo(const BadSpec& bad, std::ostream* os) { *os << bad.test_name; }

class JobFromSpecLimitTest : public ::testing::TestWithParam<BadSpec> {};

TEST_P(JobFromSpecLimitTest, IsInvalidArgumentNamingTheField) {
  v1::JobSpec spec = Spec();
  GetParam().spoil(spec);
  EXPECT_THAT(JobFromSpec(spec, Policy(), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(GetParam().field)));
}

void SetDuration(google::protobuf::Duration* d, absl::Duration value) {
  ToProto(value, d);
}

INSTANTIATE_TEST_SUITE_P(
    EachLimit, JobFromSpecLimitTest,
    ::testing::Values(
        BadSpec{"MissingQueue", [](v1::JobSpec& s) { s.clear_queue(); },
                "queue is required"},
        BadSpec{"BadQueue", [](v1::JobSpec& s) { s.set_queue("a b"); },
                "queue"},
        BadSpec{"MissingKind", [](v1::JobSpec& s) { s.clear_kind(); },
                "kind is required"},
        BadSpec{"LongKind",
                [](v1::JobSpec& s) { s.set_kind(std::string(129, 'k')); },
                "kind"},
        BadSpec{"LargePayload",
                [](v1::JobSpec& s) { s.set_payload(std::string(101, 'p')); },
                "payload is 101 bytes; the limit is 100"},
        BadSpec{"LongContentType",
                [](v1::JobSpec& s) {
                  s.set_content_type(
                      std::string(kMaxContentTypeLength + 1, 'c'));
                },
                "content_type"},
        BadSpec{"ControlInContentType",
                [](v1::JobSpec& s) { s.set_content_type("text/\nplain"); },
                "content_type"},
        BadSpec{"BadLabelKey",
                [](v1::JobSpec& s) { (*s.mutable_labels())["-x"] = "v"; },
                "label key"},
        BadSpec{"BadLabelValue",
                [](v1::JobSpec& s) { (*s.mutable_labels())["x"] = "a\nb"; },
                "label x"},
        BadSpec{"PriorityTooHigh",
                [](v1::JobSpec& s) { s.set_priority(kMaxPriority + 1); },
                "priority"},
        BadSpec{"PriorityTooLow",
                [](v1::JobSpec& s) { s.set_priority(-kMaxPriority - 1); },
                "priority"},
        BadSpec{"RunAtAndDelay",
                [](v1::JobSpec& s) {
                  ToProto(kNow, s.mutable_run_at());
                  s.mutable_delay()->set_seconds(1);
                },
                "run_at and delay"},
        BadSpec{"NegativeDelay",
                [](v1::JobSpec& s) { s.mutable_delay()->set_seconds(-1); },
                "delay"},
        BadSpec{"DelayTooLong",
                [](v1::JobSpec& s) {
                  SetDuration(s.mutable_delay(), kMaxDelay + absl::Seconds(1));
                },
                "delay"},
        BadSpec{"RunAtTooFar",
                [](v1::JobSpec& s) {
                  ToProto(kNow + kMaxDelay + absl::Seconds(1),
                          s.mutable_run_at());
                },
                "run_at"},
        BadSpec{"RunAtBadNanos",
                [](v1::JobSpec& s) {
                  ToProto(kNow, s.mutable_run_at());
                  s.mutable_run_at()->set_nanos(1000000000);
                },
                "run_at"},
        BadSpec{"RunAtNegativeNanos",
                [](v1::JobSpec& s) {
                  ToProto(kNow, s.mutable_run_at());
                  s.mutable_run_at()->set_nanos(-1);
                },
                "run_at"},
        BadSpec{"TooManyAttempts",
                [](v1::JobSpec& s) {
                  s.mutable_retry()->set_max_attempts(kMaxAttempts + 1);
                },
                "retry.max_attempts"},
        BadSpec{"NegativeInitialBackoff",
                [](v1::JobSpec& s) {
                  s.mutable_retry()->mutable_initial_backoff()->set_seconds(-1);
                },
                "retry.initial_backoff"},
        BadSpec{"InitialBackoffTooLong",
                [](v1::JobSpec& s) {
                  SetDuration(s.mutable_retry()->mutable_initial_backoff(),
                              kMaxDelay + absl::Seconds(1));
                },
                "retry.initial_backoff"},
        BadSpec{"NegativeMaxBackoff",
                [](v1::JobSpec& s) {
                  s.mutable_retry()->mutable_max_backoff()->set_nanos(-1);
                },
                "retry.max_backoff"},
        BadSpec{"LeaseTtlTooShort",
                [](v1::JobSpec& s) {
                  SetDuration(s.mutable_lease_ttl(), absl::Milliseconds(999));
                },
                "lease_ttl"},
        BadSpec{"LeaseTtlZero", [](v1::JobSpec& s) { s.mutable_lease_ttl(); },
                "lease_ttl"},
        BadSpec{"LeaseTtlTooLong",
                [](v1::JobSpec& s) {
                  SetDuration(s.mutable_lease_ttl(),
                              kMaxLeaseTtl + absl::Seconds(1));
                },
                "lease_ttl"},
        BadSpec{"NegativeTimeout",
                [](v1::JobSpec& s) { s.mutable_timeout()->set_seconds(-5); },
                "timeout"},
        BadSpec{"TimeoutTooLong",
                [](v1::JobSpec& s) {
                  SetDuration(s.mutable_timeout(),
                              kMaxDelay + absl::Seconds(1));
                },
                "timeout"},
        BadSpec{"LongIdempotencyKey",
                [](v1::JobSpec& s) {
                  s.set_idempotency_key(
                      std::string(kMaxIdempotencyKeyLength + 1, 'i'));
                },
                "idempotency_key"}),
    [](const ::testing::TestParamInfo<BadSpec>& info) {
      return std::string(info.param.test_name);
    });

// ------------------------------------------------------------------ convert

TEST(ParseJobId, AcceptsPositiveIntegers) {
  EXPECT_THAT(ParseJobId("12"), IsOkAndHolds(12));
  EXPECT_THAT(ParseJobId("1"), IsOkAndHolds(1));
  EXPECT_THAT(ParseJobId("9223372036854775807"), IsOkAndHolds(INT64_MAX));
}

TEST(ParseJobId, RejectsEverythingElseNamingTheValue) {
  EXPECT_THAT(ParseJobId(""), StatusIs(absl::StatusCode::kInvalidArgument,
                                       HasSubstr("job_id is required")));
  for (const char* id : {"abc", "0", "-5", "12abc", "1.5", "0x10", "+12", " 12",
                         "12\n", "9223372036854775808"}) {
    EXPECT_THAT(
        ParseJobId(id),
        StatusIs(absl::StatusCode::kInvalidArgument,
                 HasSubstr(absl::StrCat("got \"", absl::CEscape(id), "\""))))
        << id;
  }
}

TEST(FormatJobId, RoundTripsThroughParseJobId) {
  for (int64_t id : {int64_t{1}, int64_t{42}, int64_t{1} << 40, INT64_MAX}) {
    EXPECT_THAT(ParseJobId(FormatJobId(id)), IsOkAndHolds(id)) << id;
  }
  EXPECT_EQ(FormatJobId(12), "12");
}

google::protobuf::Timestamp Timestamp(int64_t seconds, int32_t nanos) {
  google::protobuf::Timestamp t;
  t.set_seconds(seconds);
  t.set_nanos(nanos);
  return t;
}

TEST(Convert, TimestampsRoundTripIncludingBeforeTheEpoch) {
  struct Case {
    absl::Time time;
    int64_t seconds;
    int32_t nanos;
  };
  for (const Case& c : {
           Case{absl::UnixEpoch(), 0, 0},
           Case{absl::FromUnixMicros(1500000), 1, 500000000},
           Case{absl::FromUnixSeconds(1800000000), 1800000000, 0},
           // Proto timestamps keep nanos in [0, 1e9) even before 1970.
           Case{absl::FromUnixMicros(-1), -1, 999999000},
           Case{absl::FromUnixMicros(-1500000), -2, 500000000},
           Case{absl::FromUnixSeconds(-86400), -86400, 0},
       }) {
    SCOPED_TRACE(absl::FormatTime(c.time));
    google::protobuf::Timestamp proto;
    ToProto(c.time, &proto);
    EXPECT_EQ(proto.seconds(), c.seconds);
    EXPECT_EQ(proto.nanos(), c.nanos);
    EXPECT_EQ(FromProto(proto), c.time);
    EXPECT_EQ(FromProto(Timestamp(c.seconds, c.nanos)), c.time);
  }
}

TEST(Convert, TimestampsKeepMicroseconds) {
  // Storage keeps microseconds; so does the conversion (sub-microsecond
  // parts are dropped toward the past).
  google::protobuf::Timestamp proto;
  ToProto(absl::FromUnixNanos(1000001999), &proto);
  EXPECT_EQ(proto.seconds(), 1);
  EXPECT_EQ(proto.nanos(), 1000);
  EXPECT_EQ(FromProto(Timestamp(1, 123456789)),
            absl::FromUnixNanos(1123456789));
}

TEST(Convert, DurationsRoundTripWithTheSignOnBothParts) {
  struct Case {
    absl::Duration duration;
    int64_t seconds;
    int32_t nanos;
  };
  for (const Case& c : {
           Case{absl::ZeroDuration(), 0, 0},
           Case{absl::Milliseconds(1500), 1, 500000000},
           Case{absl::Hours(24), 86400, 0},
           Case{absl::Nanoseconds(1), 0, 1},
           // Proto durations carry the sign on both fields.
           Case{-absl::Milliseconds(1500), -1, -500000000},
           Case{-absl::Nanoseconds(1), 0, -1},
           Case{-absl::Seconds(7), -7, 0},
       }) {
    SCOPED_TRACE(absl::FormatDuration(c.duration));
    google::protobuf::Duration proto;
    ToProto(c.duration, &proto);
    EXPECT_EQ(proto.seconds(), c.seconds);
    EXPECT_EQ(proto.nanos(), c.nanos);
    google::protobuf::Duration back;
    back.set_seconds(c.seconds);
    back.set_nanos(c.nanos);
    EXPECT_EQ(FromProto(back), c.duration);
  }
}

TEST(Convert, StatesConvertByValue) {
  EXPECT_EQ(ToProto(JobState::kScheduled), v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(ToProto(JobState::kQueued), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(ToProto(JobState::kRunning), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(ToProto(JobState::kSucceeded), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(ToProto(JobState::kFailed), v1::JOB_STATE_FAILED);
  EXPECT_EQ(ToProto(JobState::kCancelled), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(FromProto(v1::JOB_STATE_FAILED), JobState::kFailed);
}

TEST(Convert, JobLeavesUnsetTimesUnsetAndPayloadOnRequest) {
  JobRecord job;
  job.id = 7;
  job.queue = "q";
  job.kind = "k";
  job.state = JobState::kQueued;
  job.run_at = job.created_at = job.updated_at = kNow;
  job.payload = "in";
  job.result = "out";
  job.lease_deadline = kNow + absl::Seconds(30);  // stale: not RUNNING

  v1::Job basic;
  ToProto(job, /*with_payload=*/false, &basic);
  EXPECT_EQ(basic.id(), "7");
  EXPECT_EQ(basic.state(), v1::JOB_STATE_QUEUED);
  EXPECT_TRUE(basic.has_run_at());
  EXPECT_FALSE(basic.has_started_at());
  EXPECT_FALSE(basic.has_finished_at());
  EXPECT_FALSE(basic.has_lease_deadline());
  EXPECT_FALSE(basic.has_timeout());
  EXPECT_FALSE(basic.has_progress());
  EXPECT_THAT(basic.payload(), IsEmpty());
  EXPECT_THAT(basic.result(), IsEmpty());

  v1::Job full;
  job.state = JobState::kRunning;
  job.progress_percent = 10;
  ToProto(job, /*with_payload=*/true, &full);
  EXPECT_EQ(full.payload(), "in");
  EXPECT_EQ(full.result(), "out");
  EXPECT_EQ(FromProto(full.lease_deadline()), kNow + absl::Seconds(30));
  EXPECT_EQ(full.progress().percent(), 10u);
}

// -------------------------------------------------------- ValidateDuration

TEST(ValidateDuration, TakesWhatTheTypeDefinesAndRefusesTheRest) {
  auto duration = [](int64_t seconds, int32_t nanos) {
    google::protobuf::Duration d;
    d.set_seconds(seconds);
    d.set_nanos(nanos);
    return d;
  };
  for (const auto& ok : {duration(0, 0), duration(1, 999999999),
                         duration(-1, -999999999), duration(0, -5)}) {
    EXPECT_THAT(ValidateDuration("delay", ok), IsOk()) << ok.DebugString();
  }
  for (const auto& bad : {duration(0, 1000000000), duration(1, -1),
                          duration(-1, 1), duration(0, -1000000000)}) {
    EXPECT_THAT(ValidateDuration("delay", bad),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("delay is not a valid Duration")))
        << bad.DebugString();
  }
}

TEST(JobFromSpec, ADurationWithNanosOutOfRangeIsRefused) {
  v1::JobSpec spec = Spec();
  spec.mutable_lease_ttl()->set_seconds(30);
  spec.mutable_lease_ttl()->set_nanos(1500000000);
  EXPECT_THAT(JobFromSpec(spec, Policy(), kNow),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("lease_ttl is not a valid Duration")));
}

// ---------------------------------------------------------- ValidatePolicy

TEST(ValidatePolicy, NamesTheFieldWithTheCallersPrefixAndTheRange) {
  EXPECT_THAT(ValidatePolicy(Policy(), "--"), IsOk());
  struct Case {
    void (*spoil)(JobPolicy&);
    const char* message;
  } cases[] = {
      {[](JobPolicy& p) { p.lease_ttl = absl::Milliseconds(999); },
       "--lease_ttl must be a duration in 1s..24h"},
      {[](JobPolicy& p) { p.max_attempts = 0; },
       "--max_attempts must be between 1 and 1000"},
      {[](JobPolicy& p) { p.initial_backoff = -absl::Seconds(1); },
       "--initial_backoff must be a duration in 0s.."},
      {[](JobPolicy& p) { p.max_backoff = kMaxDelay + absl::Seconds(1); },
       "--max_backoff must be a duration in 0s.."},
      {[](JobPolicy& p) { p.max_backoff = p.initial_backoff / 2; },
       "--max_backoff is below --initial_backoff"},
      {[](JobPolicy& p) { p.max_payload_bytes = kMaxPayloadLimit + 1; },
       "--max_payload_bytes must be between 1 and 268435456"},
  };
  for (const Case& c : cases) {
    JobPolicy policy = Policy();
    c.spoil(policy);
    EXPECT_THAT(
        ValidatePolicy(policy, "--"),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.message)));
  }
}

// ---------------------------------------------------- ValidateWorkerQueues

TEST(ValidateWorkerQueues, KeepsTheFirstOfEachQueueInOrder) {
  google::protobuf::RepeatedPtrField<std::string> queues;
  for (const char* q : {"b", "a", "b", "c", "a"}) *queues.Add() = q;
  EXPECT_THAT(ValidateWorkerQueues("queues", queues),
              IsOkAndHolds(ElementsAre("b", "a", "c")));
}

TEST(ValidateWorkerQueues, RefusesNoneTooManyAndBadNames) {
  google::protobuf::RepeatedPtrField<std::string> queues;
  EXPECT_THAT(ValidateWorkerQueues("Hello.queues", queues),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("Hello.queues must name 1 to 64 queues")));
  for (int i = 0; i <= kMaxWorkerQueues; ++i) {
    *queues.Add() = "q" + std::to_string(i);
  }
  EXPECT_THAT(ValidateWorkerQueues("queues", queues),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("queues must name 1 to 64 queues")));
  queues.Clear();
  *queues.Add() = "bad queue";
  EXPECT_THAT(ValidateWorkerQueues("queues", queues),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("queue")));
}

}  // namespace
}  // namespace ferry::testing
