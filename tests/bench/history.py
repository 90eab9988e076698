#!/usr/bin/env python3
"""The large-history benchmark of docs/BENCHMARKS.md, against the real binary.

    python3 tests/bench/history.py target/release/readerd --payments 1000000 [--store DIR]

Fills a test store with N final payments (`readerd bench --fill-store`, skipped when DIR
already holds one), starts `readerd run` on it and reports: start to ready (spawn to the
API answering), 1,000 list calls (pages of 100 followed through their Link headers, a
merchant's pages, a rare status) with their p50/p99, the daemon's RSS (VmRSS, its peak
VmHWM, and its anonymous and file-backed parts) at ready and after each kind of call, and
the archive rate (`readerd archive now` on the oldest tenth, daemon stopped).
`--env NAME=VALUE` sets the daemon's environment, `--wrap CMD` runs it under a command.
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "bench-admin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        body = r.read()
        link = r.headers.get("Link")
    return time.perf_counter() - t, json.loads(body), link


def next_of(link):
    if not link:
        return None
    return link[1 : link.index(">")]


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def rss_mib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = round(int(v.split()[0]) / 1024, 1)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--payments", type=int, default=1_000_000)
    ap.add_argument("--store", help="keep (or reuse) the filled store here")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--cache-mb", type=int, default=16, help="[store] cache_mb (its default)")
    ap.add_argument("--no-archive", action="store_true", help="leave the store as it is")
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set in the daemon's environment (e.g. MALLOC_ARENA_MAX=2); repeatable",
    )
    ap.add_argument(
        "--wrap",
        default="",
        help="a command to run the daemon under (e.g. '/usr/bin/time -v'); the RSS printed is "
        "then the wrapper's. Heap profilers that hook malloc see nothing of a jemalloc build",
    )
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="readerd-history-")
    store = a.store or os.path.join(work, "store")
    if not os.path.exists(os.path.join(store, "db")):
        t = time.perf_counter()
        subprocess.run(
            [a.binary, "bench", "--fill-store", store, "--payments", str(a.payments)],
            check=True,
        )
        fill = time.perf_counter() - t
        print(f"fill: {a.payments} payments in {fill:.1f} s = {a.payments / fill:.0f}/s")
    du = subprocess.run(["du", "-sm", store], capture_output=True, text=True).stdout.split()[0]
    print(f"store on disk: {du} MiB")
    port = free_port()
    archive = os.path.join(work, "archive")
    config = os.path.join(work, "readerd.toml")
    with open(config, "w") as f:
        f.write(
            f"""
[stripe]
api_base = "http://127.0.0.1:{free_port()}"
[store]
path = "{store}"
cache_mb = {a.cache_mb}
archive_dir = "{archive}"
[api]
listen = "127.0.0.1:{port}"
[[api.clients]]
name = "admin"
token_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"
role = "admin"
[sync]
interval = "1h"
[log]
level = "warn"
"""
        )
    env = dict(os.environ, READERD_STRIPE_SECRET_KEY="sk_test_bench")
    for kv in a.env:
        k, _, v = kv.partition("=")
        env[k] = v
    base = f"http://127.0.0.1:{port}"
    t = time.perf_counter()
    d = subprocess.Popen(
        a.wrap.split() + [a.binary, "run", "--config", config],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(base + "/healthz").read()
                break
            except OSError:
                time.sleep(0.005)
        print(f"start to ready: {time.perf_counter() - t:.2f} s")
        print(f"RSS at ready: {rss_mib(d.pid)}")
        series = {
            "page of 100, following Link": "/v1/payments",
            "merchant filter, following Link": "/v1/payments?merchant=m1",
            "status=canceled (1 in 20), following Link": "/v1/payments?status=canceled",
        }
        share = {k: a.calls // 2 if i == 0 else a.calls // 4 for i, k in enumerate(series)}
        for name, path in series.items():
            times, n, p = [], 0, path
            while n < share[name]:
                dt, body, link = get(base + p)
                assert len(body) == 100 or not link, (p, len(body))
                times.append(dt)
                n += 1
                p = next_of(link) or path
            print(
                f"{name}: {n} calls, p50 {quantile(times, 0.5) * 1000:.1f} ms, "
                f"p99 {quantile(times, 0.99) * 1000:.1f} ms; RSS {rss_mib(d.pid)}"
            )
        print(f"RSS after {a.calls} list calls: {rss_mib(d.pid)}")
        # The settlement report of one day, for ten days spread over the filled year.
        times, rows = [], 0
        for k in range(10):
            day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - (10 + 33 * k) * 86400))
            dt, body, _ = get(f"{base}/v1/reports/settlement?from={day}&to={day}")
            times.append(dt)
            rows += sum(r.get("payments", 0) for r in body)
        print(
            f"one day's settlement report: 10 days, {rows / 10:.0f} payments a day, "
            f"p50 {quantile(times, 0.5) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
        )
        print(f"RSS after the reports: {rss_mib(d.pid)}")
    finally:
        d.terminate()
        d.wait()
    if not a.no_archive:
        # Archive the oldest tenth (the filled payments span 365 days ending now).
        before = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 365 * 86400 * 0.9)
        )
        out = subprocess.run(
            [a.binary, "archive", "--config", config, "now", "--before", before],
            capture_output=True,
            text=True,
            check=True,
        )
        print("archive:", out.stdout.strip())
    # The config, the archive and a store of our own; a --store given is kept.
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
