#!/usr/bin/python3
"""Submits jobs to Ferry and, with --wait, waits for each and prints its result.

    ./gen_stubs.sh
    /usr/bin/python3 submit.py --queue python --count 3 --payload 'job {n}' --wait

Prints one line per job: its id, or with --wait "ID STATE RESULT-OR-ERROR".
Exit status: 0 when every job was submitted (and, with --wait, SUCCEEDED);
1 when a job failed, was cancelled or is not done after --timeout; 2 when
the broker refused a call (a missing or unknown token too) or could not be
reached, or an option is wrong. TLS and the token: see ferry_connect.py.
"""

import argparse
import os
import sys
import time

import grpc
from google.protobuf.duration_pb2 import Duration

import ferry_connect

# Stubs from gen_stubs.sh; PYTHONPATH, if set, takes precedence.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
try:
    from ferry.v1 import job_pb2
    from ferry.v1 import jobs_pb2
    from ferry.v1 import jobs_pb2_grpc
except ImportError as e:
    sys.exit(f"submit.py: {e}; generate the stubs first: examples/python/gen_stubs.sh")

CALL_TIMEOUT = 10.0  # seconds, for every call but Wait


def wait(stub, job_id, timeout, metadata):
    """Waits until the job is terminal or `timeout` seconds pass; the last job seen."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(deadline - time.monotonic(), 0.0)
        step = min(left, 3600.0)  # the broker waits at most an hour per call
        request = jobs_pb2.WaitRequest(job_id=job_id, timeout=Duration())
        request.timeout.FromMilliseconds(int(step * 1000))
        reply = stub.Wait(request, timeout=step + CALL_TIMEOUT, metadata=metadata)
        if reply.done or left <= step:
            return reply.job


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=os.environ.get("FERRY_BROKER") or "127.0.0.1:7070",
                        help="ferryd's HOST:PORT (default: $FERRY_BROKER, else 127.0.0.1:7070)")
    parser.add_argument("--queue", default="python", help="default: python")
    parser.add_argument("--kind", default="default", help="default: default")
    parser.add_argument("-n", "--count", type=int, default=1, help="how many jobs (default 1)")
    parser.add_argument("--payload", default="hello from python",
                        help="the payload; {n} is replaced by the job's number, 1..count")
    parser.add_argument("--wait", action="store_true", help="wait for each job and print its outcome")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="with --wait, how long to wait for each job in seconds (default 60)")
    ferry_connect.add_arguments(parser)
    args = parser.parse_args()
    try:
        settings = ferry_connect.resolve(args)
    except ValueError as e:
        parser.error(str(e))

    channel, metadata = ferry_connect.open_channel(args.broker, settings)
    with channel:
        stub = jobs_pb2_grpc.JobsStub(channel)
        try:
            ids = []
            for n in range(1, args.count + 1):
                spec = job_pb2.JobSpec(queue=args.queue, kind=args.kind,
                                       payload=args.payload.replace("{n}", str(n)).encode())
                reply = stub.Submit(jobs_pb2.SubmitRequest(job=spec), timeout=CALL_TIMEOUT,
                                    metadata=metadata)
                ids.append(reply.job.id)
                if not args.wait:
                    print(reply.job.id, flush=True)
            if not args.wait:
                return 0
            ok = True
            for job_id in ids:
                job = wait(stub, job_id, args.timeout, metadata)
                state = job_pb2.JobState.Name(job.state).replace("JOB_STATE_", "")
                if job.state == job_pb2.JOB_STATE_SUCCEEDED:
                    print(job_id, state, job.result.decode(errors="backslashreplace"), flush=True)
                else:
                    ok = False
                    print(job_id, state, job.last_error or "(still waiting)", flush=True)
            return 0 if ok else 1
        except grpc.RpcError as e:
            print(f"submit.py: {args.broker}: {e.code().name}: {e.details()}", file=sys.stderr)
            advice = ferry_connect.hint(e, settings)
            if advice:
                print(f"submit.py: {advice}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
