"""Misbehaving gRPC clients of ferryd, for bench/abuse_soak.sh.

Run with Debian's /usr/bin/python3 (python3-grpcio) and stubs from
examples/python/gen_stubs.sh on PYTHONPATH. Only loopback addresses are
meant; every mode ends after SECONDS.

  watchers ADDR N SECONDS   submits one job with a 1,000,000-byte payload
                            and opens N Watch calls on it with the FULL view
                            (each first response carries the payload), over
                            4 connections, and never reads them.
  greedy ADDR QUEUE CREDITS SECONDS
                            a worker stream on QUEUE that says Hello with
                            CREDITS credits and never reads what it is sent.

Each prints one `KEY=VALUE ...` line when its calls are open, then holds them.
"""

import sys
import threading
import time

import grpc

from ferry.v1 import job_pb2
from ferry.v1 import jobs_pb2
from ferry.v1 import jobs_pb2_grpc
from ferry.v1 import workers_pb2
from ferry.v1 import workers_pb2_grpc


def watchers(address, n, seconds):
  channels = [grpc.insecure_channel(address) for _ in range(4)]
  jobs = jobs_pb2_grpc.JobsStub(channels[0])
  spec = job_pb2.JobSpec(queue='abuse-watch', kind='big',
                         payload=b'w' * 1000000)
  job = jobs.Submit(jobs_pb2.SubmitRequest(job=spec), timeout=30).job
  calls = []
  for i in range(n):
    stub = jobs_pb2_grpc.JobsStub(channels[i % len(channels)])
    calls.append(stub.Watch(jobs_pb2.WatchRequest(
        job_id=job.id, view=job_pb2.JOB_VIEW_FULL), timeout=seconds + 30))
  print(f'watchers opened={n} job_id={job.id}', flush=True)
  time.sleep(seconds)
  ended = sum(1 for c in calls if c.done())
  print(f'watchers ended_by_server={ended}', flush=True)


def greedy(address, queue, credits, seconds):
  channel = grpc.insecure_channel(address)
  stub = workers_pb2_grpc.WorkersStub(channel)
  stop = threading.Event()

  def messages():
    yield workers_pb2.WorkerMessage(hello=workers_pb2.Hello(
        worker_id='greedy', hostname='abuse', queues=[queue],
        initial_credits=credits, accepts_batches=True))
    stop.wait(seconds)

  call = stub.Connect(messages(), timeout=seconds + 30)
  print(f'greedy credits={credits} queue={queue}', flush=True)
  time.sleep(seconds)
  print(f'greedy ended_by_server={int(call.done())}', flush=True)
  stop.set()


def main():
  args = sys.argv[1:]
  if len(args) == 4 and args[0] == 'watchers':
    watchers(args[1], int(args[2]), float(args[3]))
  elif len(args) == 5 and args[0] == 'greedy':
    greedy(args[1], args[2], int(args[3]), float(args[4]))
  else:
    sys.exit(__doc__)


if __name__ == '__main__':
  main()
