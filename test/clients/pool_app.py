#!/usr/bin/python3
"""An application with a real client pool, measured from the client's side.

pool_health's pool advice is tested against it (test/t/025_pool_advice_clients.pl):
SQLAlchemy 1.4's QueuePool over psycopg2 (Debian: python3-sqlalchemy,
python3-psycopg2), which opens connections lazily, as applications use it.
Each request checks a connection out of the pool, runs one transaction
(BEGIN; SELECT pg_sleep(duration); COMMIT) and checks it in.

Load, either
  --rate R       open loop: requests arrive at random (Poisson, R a second,
                 fixed seed), each served by one of --threads handler
                 threads (a web server's), whatever the pool can take;
  --workers W    closed loop: W threads, each thinking --think-ms between
                 its requests (a worker pool).
--warm opens all pool_size connections first (a pool with a minimum size).
--declare passes the pool's size to the server in the startup options
(-c pool_health.client_pool_size=N).  --recycle-s S replaces a connection
older than S seconds at its next checkout (SQLAlchemy's pool_recycle), so
that the pool keeps connecting, as long-running applications' pools do.

Prints one line of JSON: requests served, errors, the most connections
checked out at once, connections the pool opened, the requests that
arrived while every connection of the pool was checked out (they waited
for one), the time each request waited to check a connection out (from
its arrival), in ms, the time its transactions took in all (from
BEGIN to the end of COMMIT), in ms, and percentiles of each request's
latency (from its arrival to the end of its COMMIT), in ms.
"""
import argparse
import concurrent.futures
import json
import random
import threading
import time

import sqlalchemy
from sqlalchemy import event, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--app", required=True)
    ap.add_argument("--pool-size", type=int, required=True)
    ap.add_argument("--declare", action="store_true")
    ap.add_argument("--warm", action="store_true")
    ap.add_argument("--rate", type=float)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--threads", type=int, default=100)
    ap.add_argument("--think-ms", type=float, default=0)
    ap.add_argument("--duration-ms", type=float, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--recycle-s", type=float, default=-1)
    args = ap.parse_args()

    connect_args = {"application_name": args.app}
    if args.declare:
        connect_args["options"] = "-c pool_health.client_pool_size=%d" % args.pool_size
    engine = sqlalchemy.create_engine(
        args.url, pool_size=args.pool_size, max_overflow=0, pool_timeout=120,
        pool_recycle=args.recycle_s, connect_args=connect_args)

    lock = threading.Lock()
    state = {"out": 0, "peak": 0, "opened": 0, "exhausted": 0, "xact_ms": 0.0}
    waits = []
    latencies = []
    errors = []

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn, record):
        with lock:
            state["opened"] += 1

    @event.listens_for(engine, "checkout")
    def on_checkout(dbapi_conn, record, proxy):
        with lock:
            state["out"] += 1
            state["peak"] = max(state["peak"], state["out"])

    @event.listens_for(engine, "checkin")
    def on_checkin(dbapi_conn, record):
        with lock:
            state["out"] -= 1

    def request(arrival):
        with lock:
            if state["out"] >= args.pool_size:
                state["exhausted"] += 1
        try:
            with engine.connect() as conn:
                checked_out = time.monotonic()
                with conn.begin():
                    conn.execute(text("SELECT pg_sleep(:d)"), {"d": args.duration_ms / 1000.0})
                committed = time.monotonic()
            with lock:
                waits.append((checked_out - arrival) * 1000.0)
                latencies.append((committed - arrival) * 1000.0)
                state["xact_ms"] += (committed - checked_out) * 1000.0
        except Exception as e:  # counted, and the first few shown
            with lock:
                errors.append(repr(e))

    if args.warm:
        conns = [engine.connect() for _ in range(args.pool_size)]
        for c in conns:
            c.close()
        with lock:
            state["peak"] = 0

    threads = []
    start = time.monotonic()
    end = start + args.seconds
    if args.rate:
        rng = random.Random(args.seed)
        at = start
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.threads) as handlers:
            while True:
                at += rng.expovariate(args.rate)
                if at >= end:
                    break
                delay = at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                handlers.submit(request, at)
    else:
        def worker():
            while time.monotonic() < end:
                if args.think_ms:
                    time.sleep(args.think_ms / 1000.0)
                request(time.monotonic())
        threads = [threading.Thread(target=worker) for _ in range(args.workers)]
        for t in threads:
            t.start()
    for t in threads:
        t.join()
    engine.dispose()

    waits.sort()
    latencies.sort()

    def pct(p, values=waits):
        if not values:
            return None
        return round(values[min(len(values) - 1, int(p * len(values)))], 3)

    print(json.dumps({
        "app": args.app, "pool_size": args.pool_size, "requests": len(waits),
        "errors": len(errors), "first_errors": errors[:3],
        "peak_checkouts": state["peak"], "opened": state["opened"],
        "exhausted": state["exhausted"], "xact_ms": round(state["xact_ms"], 3),
        "wait_p50_ms": pct(0.50), "wait_p95_ms": pct(0.95), "wait_p99_ms": pct(0.99),
        "wait_max_ms": round(waits[-1], 3) if waits else None,
        "wait_mean_ms": round(sum(waits) / len(waits), 3) if waits else None,
        "latency_p50_ms": pct(0.50, latencies), "latency_p99_ms": pct(0.99, latencies),
        "seconds": round(time.monotonic() - start, 3)}))


if __name__ == "__main__":
    main()
