#!/usr/bin/env python3
"""Markdown table of a comparison run (bench/compare/run.sh).

Reads the JSON lines run.sh wrote (one per run: ferry-bench's or a
driver's line plus round, server_cpu_s and client_cpu_s) and prints, per
peer, the median jobs/s over the rounds, the range, the ratio to Ferry's
median from the same file, the CPU both sides spent per job and the
machine's 1-minute load average and fsync latency when the runs started
(other work on the machine makes the figures noisy). Exits 1 when a run failed.

  summarize.py [--runs] RESULTS.jsonl

--runs lists every run instead, in the order they ran.
"""

import json
import statistics
import sys

# Order and description of the peers run.sh knows.
PEERS = [
    ("ferry", "yes", "ferryd, default settings (--sync=full)"),
    ("ferry-batch", "yes", "the same ferryd, producers send SubmitBatch"),
    ("beanstalkd-binlog-fsync", "yes", "beanstalkd -b DIR -f 0"),
    ("redis-aof-always", "yes", "redis-server appendonly yes, appendfsync always"),
    ("postgres-sync-commit", "yes", "PostgreSQL, fsync=on, synchronous_commit=on"),
    ("beanstalkd-no-binlog", "no (reference)", "beanstalkd without -b"),
]


def fmt_rate(value):
    return f"{value:,.0f}"


def fmt_num(value, digits=0):
    return "–" if value != value else f"{value:.{digits}f}"  # NaN: not recorded


def main(path, runs_only):
    records = []
    with open(path) as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
    if runs_only:
        print("| Round | Peer | jobs/s | Seconds | Load (1 min) | fsync µs |")
        print("|---:|---|---:|---:|---:|---:|")
        for r in records:  # in the order they ran
            if r.get("failed"):
                print(f"| {r['round']} | {r['peer']} | FAILED | | | |")
            else:
                print(f"| {r['round']} | {r['peer']} | {fmt_rate(r['jobs_per_s'])} "
                      f"| {r['seconds']:.2f} | {r.get('load1', '')} | {r.get('fsync_us', '')} |")
        return 0

    runs = {}
    for record in records:
        runs.setdefault(record["peer"], []).append(record)

    def ok(peer):
        return [r for r in runs.get(peer, []) if not r.get("failed")]

    ferry = [r["jobs_per_s"] for r in ok("ferry")]
    ferry_median = statistics.median(ferry) if ferry else None

    print("| Peer | Durable | Median jobs/s | Range (min–max) | Peer ÷ Ferry | Ferry ÷ peer "
          "| Server CPU µs/job | Client CPU µs/job | Load (1 min) | fsync µs | Runs OK |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    known = [p for p, _, _ in PEERS]
    order = known + sorted(p for p in runs if p not in known)
    durable = {p: d for p, d, _ in PEERS}
    failed_any = False
    medians = {}
    for peer in order:
        if peer not in runs:
            continue
        good = ok(peer)
        total = len(runs[peer])
        failed_any |= len(good) != total
        if not good:
            print(f"| {peer} | {durable.get(peer, '?')} | FAILED | | | | | | | | 0/{total} |")
            continue
        rates = [r["jobs_per_s"] for r in good]
        median = statistics.median(rates)
        medians[peer] = median
        server = statistics.median(r["server_cpu_s"] / r["jobs"] * 1e6 for r in good)
        client = statistics.median(r["client_cpu_s"] / r["jobs"] * 1e6 for r in good)
        load = statistics.median(r.get("load1", float("nan")) for r in good)
        fsync = statistics.median(r.get("fsync_us", float("nan")) for r in good)
        if ferry_median and peer != "ferry":
            ratio = f"{median / ferry_median:.2f}"
            inverse = f"{ferry_median / median:.2f}×"
        elif peer == "ferry":
            ratio, inverse = "1.00", "1.00×"
        else:
            ratio = inverse = "n/a"
        print(f"| {peer} | {durable.get(peer, '?')} | {fmt_rate(median)} "
              f"| {fmt_rate(min(rates))}–{fmt_rate(max(rates))} | {ratio} | {inverse} "
              f"| {server:.0f} | {client:.0f} | {fmt_num(load, 1)} | {fmt_num(fsync)} | {len(good)}/{total} |")
    if "ferry-batch" in medians:
        batch = medians["ferry-batch"]
        parts = [f"{peer} {batch / m:.2f}×" for peer, m in medians.items()
                 if not peer.startswith("ferry") and m > 0]
        print()
        print("ferry-batch ÷ peer (medians from this run): " + ", ".join(parts) + ".")
    return 1 if failed_any else 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--runs"]
    if len(args) != 1:
        sys.exit(__doc__)
    sys.exit(main(args[0], "--runs" in sys.argv[1:]))
