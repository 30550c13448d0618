#!/usr/bin/python3
"""A Ferry worker in Python, on the Workers.Connect stream.

The handler upper-cases each job's payload (or, with --fail, fails the job
for good). The worker follows docs/protocol.md section 7: Hello with credits,
one thread per job, heartbeats at the Welcome interval (or faster for short
lease TTLs), a Credit after each job, results kept until acknowledged, and
reconnects with backoff that take back running jobs through held_leases.
SIGINT or SIGTERM: take no more jobs, finish and report the running ones,
then exit 0. TLS and the token: see ferry_connect.py.

    ./gen_stubs.sh
    /usr/bin/python3 worker.py --queue python --concurrency 2
"""

import argparse
import os
import queue
import random
import signal
import socket
import sys
import threading
import time

import grpc

import ferry_connect

# Stubs from gen_stubs.sh; PYTHONPATH, if set, takes precedence.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
try:
    from ferry.v1 import job_pb2
    from ferry.v1 import workers_pb2 as w
    from ferry.v1 import workers_pb2_grpc as wg
except ImportError as e:
    sys.exit(f"worker.py: {e}; generate the stubs first: examples/python/gen_stubs.sh")

VERSION = "ferry-python-example/1"


class Fatal(Exception):
    """A failure that retrying will not fix: the job becomes FAILED."""


def handle(job, args):
    """The handler: returns the output bytes, or raises to fail the attempt."""
    if args.work_seconds:
        time.sleep(args.work_seconds)  # pretend to work
    if args.fail:
        raise Fatal(f"job {job.id} failed on purpose (--fail)")
    return job.payload.upper()


def log(message):
    print(f"worker: {message}", flush=True)


def seconds(duration):
    return duration.seconds + duration.nanos / 1e9


class Worker:
    def __init__(self, args, settings):
        self.args = args
        self.settings = settings  # TLS and the token (ferry_connect.resolve)
        self.worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"[:128]
        self.stop = threading.Event()  # set on SIGINT/SIGTERM
        # Everything below is guarded by `lock`; all sends happen under it.
        self.lock = threading.Lock()
        self.out = None           # queue.Queue feeding the open stream, or None
        self.call = None          # the open Connect call
        self.interval = 10.0      # Welcome.heartbeat_interval
        self.draining = False     # the broker sent Drain: no more Credit
        self.stop_deadline = None  # when a stopping worker gives up waiting
        self.credits = 0          # granted on this stream and not used yet
        self.taken = 0            # Assignments received, over all streams
        self.finished = 0         # jobs acknowledged, cancelled or lost
        self.busy = 0             # handler threads still executing
        self.running = {}         # lease_token -> (job_id, heartbeat period)
        self.unacked = {}         # lease_token -> Result without ResultAck yet
        self.resumed = ""         # what the last Hello took back, for the log

    # --- helpers; call with self.lock held

    def send(self, **fields):
        if self.out is not None:
            self.out.put(w.WorkerMessage(**fields))

    def quitting(self):
        max_jobs = self.args.max_jobs
        return self.stop.is_set() or (max_jobs > 0 and self.finished >= max_jobs)

    def free_credits(self):
        """Jobs this worker can take now: free slots, within --max-jobs."""
        if self.draining or self.quitting():
            return 0
        free = self.args.concurrency - self.busy - self.credits
        if self.args.max_jobs > 0:
            free = min(free, self.args.max_jobs - self.taken - self.credits)
        return max(free, 0)

    # --- the job threads

    def run_job(self, assignment):
        token = assignment.lease_token
        try:
            result = w.Result(lease_token=token, success=w.Success(
                output=handle(assignment.job, self.args)))
        except Exception as e:  # the handler failed: report it, keep serving
            result = w.Result(lease_token=token, failure=w.Failure(
                message=str(e)[:4096], retryable=not isinstance(e, Fatal)))
        with self.lock:
            self.busy -= 1
            if self.running.pop(token, None) is not None:  # the lease is still ours
                self.unacked[token] = result
                self.send(result=result)
            credits = self.free_credits() if self.out is not None else 0
            if credits:
                self.credits += credits
                self.send(credit=w.Credit(credits=credits))

    # --- messages from the broker

    def on_message(self, message):
        kind = message.WhichOneof("msg")
        with self.lock:
            if kind == "welcome":
                self.interval = seconds(message.welcome.heartbeat_interval) or 10.0
                log(f"connected worker_id={self.worker_id} "
                    f"session={message.welcome.session_id} "
                    f"heartbeat_interval={self.interval:g}s {self.resumed}")
            elif kind == "assignment":
                a = message.assignment
                self.credits = max(self.credits - 1, 0)
                self.taken += 1
                self.busy += 1
                period = seconds(a.job.lease_ttl) / 3 or self.interval
                self.running[a.lease_token] = (a.job.id, period)
                log(f"job {a.job.id} started attempt={a.job.attempt} kind={a.job.kind}")
                threading.Thread(target=self.run_job, args=(a,), daemon=True).start()
            elif kind == "result_ack":
                ack = message.result_ack
                if self.unacked.pop(ack.lease_token, None) is not None:
                    self.finished += 1
                log(f"job {ack.job_id} {job_pb2.JobState.Name(ack.state)}")
            elif kind in ("cancel", "lease_lost"):
                # Stop work and send no Result. (A thread cannot be killed:
                # the handler runs on, its slot stays busy, and its result
                # is dropped. A real worker would run a killable subprocess.)
                m = getattr(message, kind)
                held = self.running.pop(m.lease_token, None)
                sent = self.unacked.pop(m.lease_token, None)
                if held is not None or sent is not None:
                    self.finished += 1
                log(f"job {m.job_id} {kind}: {m.reason}")
            elif kind == "drain":
                self.draining = True
                log(f"draining: {message.drain.reason}")

    # --- the timer thread: heartbeats, and closing the stream when done

    def tick(self):
        last_heartbeat = 0.0
        while True:
            time.sleep(0.1)
            with self.lock:
                now = time.monotonic()
                if self.out is None:
                    continue
                if self.running:
                    period = min([self.interval] + [p for _, p in self.running.values()])
                    if now - last_heartbeat >= period:
                        last_heartbeat = now
                        self.send(heartbeat=w.Heartbeat(lease_tokens=list(self.running)))
                if not (self.draining or self.quitting()):
                    continue
                if self.busy == 0 and not self.unacked:
                    self.out.put(None)  # all reported: half-close the stream
                    self.out = None
                    continue
                if self.stop.is_set():
                    if self.stop_deadline is None:
                        self.stop_deadline = now + self.args.drain_timeout
                    elif now > self.stop_deadline and self.call is not None:
                        log("drain timeout: abandoning the running jobs")
                        self.call.cancel()

    # --- the stream, and reconnecting

    def connect_once(self):
        """Runs one Connect stream until it ends; True if it was welcomed."""
        requests = queue.Queue()
        with self.lock:
            self.out, self.draining, self.credits = requests, False, 0
            self.credits = self.free_credits()
            self.send(hello=w.Hello(
                worker_id=self.worker_id, hostname=socket.gethostname(),
                pid=os.getpid(), version=VERSION, queues=self.args.queue,
                initial_credits=self.credits,
                held_leases=[w.HeldLease(job_id=job_id, lease_token=token)
                             for token, (job_id, _) in self.running.items()]))
            for result in self.unacked.values():  # never acknowledged: resend
                self.send(result=result)
            self.resumed = f"held_leases={len(self.running)} resent_results={len(self.unacked)}"
        welcomed = False
        channel, metadata = ferry_connect.open_channel(self.args.broker, self.settings)
        try:
            call = wg.WorkersStub(channel).Connect(iter(requests.get, None),
                                                   metadata=metadata)
            with self.lock:
                self.call = call
            for message in call:
                welcomed = welcomed or message.HasField("welcome")
                self.on_message(message)
            log("stream closed")
        except grpc.RpcError as e:
            log(f"stream ended: {e.code().name}: {e.details()}")
            advice = ferry_connect.hint(e, self.settings)
            if advice:
                log(advice)
        finally:
            with self.lock:
                self.out = self.call = None
                self.credits = 0
            requests.put(None)  # ends the request iterator
            channel.close()
        return welcomed

    def serve(self):
        threading.Thread(target=self.tick, daemon=True).start()
        delay = 0.5
        while not self.stopping():
            if self.connect_once():
                delay = 0.5
            if self.stopping():
                break
            pause = delay * random.uniform(0.5, 1.0)
            log(f"reconnecting in {pause:.1f}s")
            self.stop.wait(pause)
            delay = min(delay * 2, 30.0)
        with self.lock:
            left = self.busy + len(self.unacked)
        if left:
            log(f"{left} job(s) not reported; their leases will expire and they will run again")
        log(f"stopped after {self.finished} job(s)")

    def stopping(self):
        with self.lock:
            return self.quitting()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default=os.environ.get("FERRY_BROKER") or "127.0.0.1:7070",
                        help="ferryd's HOST:PORT (default: $FERRY_BROKER, else 127.0.0.1:7070)")
    parser.add_argument("--queue", action="append",
                        help="a queue to take jobs from; repeat for more (default: python)")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs run at once")
    parser.add_argument("--worker-id", help="default: HOSTNAME-PID")
    parser.add_argument("--max-jobs", type=int, default=0,
                        help="exit after this many jobs (default 0: run until stopped)")
    parser.add_argument("--fail", action="store_true",
                        help="fail every job, not retryable (the job becomes FAILED)")
    parser.add_argument("--work-seconds", type=float, default=0.0,
                        help="make each job take this long")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="on SIGINT/SIGTERM, how long running jobs may take (seconds)")
    ferry_connect.add_arguments(parser)
    args = parser.parse_args()
    args.queue = args.queue or ["python"]
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    try:
        settings = ferry_connect.resolve(args)
    except ValueError as e:
        parser.error(str(e))

    worker = Worker(args, settings)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: worker.stop.set())
    log(f"starting worker_id={worker.worker_id} broker={args.broker} "
        f"queues={','.join(args.queue)} concurrency={args.concurrency} "
        f"tls={settings['ca'] is not None} token={settings['token'] is not None}")
    worker.serve()


if __name__ == "__main__":
    main()
