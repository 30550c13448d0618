#!/bin/sh
# A ferry-worker handler: reads the job's payload on stdin, reports
# progress on stderr, prints the result on stdout. Exit 0 = success,
# exit 75 = retry later, anything else = failure.
echo "FERRY-PROGRESS 50 uppercasing job $FERRY_JOB_ID (attempt $FERRY_ATTEMPT)" >&2
tr '[:lower:]' '[:upper:]'
