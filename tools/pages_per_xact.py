#!/usr/bin/python3
"""Pages a backend touches per transaction (tools/bench pages).

  pages_per_xact.py measure CONNINFO [N]
      one connection; for each workload, N times (default 100): clear the
      accessed bits of its backend's page tables (/proc/PID/clear_refs),
      run one transaction, read how many pages of each mapping were
      referenced since (/proc/PID/smaps).  Prints "workload<TAB>kind<TAB>
      pages", the means.  Needs root, or the server's OS user.
  pages_per_xact.py report LABEL=FILE ...
      the measures side by side, and each one's difference from the first.

A page a transaction touches for the first time since the process last ran
costs a TLB miss; on a machine that flushes the TLB at every context switch
(a virtual machine without PCID, as the 2-core development VM), that is
every page a transaction touches, each time.  The count is the kernel's,
exact, and does not depend on the machine's load, unlike a TPS ratio.
"""
import collections
import re
import sys

WORKLOADS = {
    # pgbench -S: one SELECT, autocommit, the simple protocol
    "select": ["SELECT abalance FROM pgbench_accounts WHERE aid = {aid}"],
    # pgbench's default script (TPC-B-like), statement by statement
    "tpcb": [
        "BEGIN",
        "UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid}",
        "SELECT abalance FROM pgbench_accounts WHERE aid = {aid}",
        "UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid}",
        "UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid}",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
        "VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP)",
        "END",
    ],
}


def kind_of(path, perms):
    """What a mapping of /proc/PID/smaps holds."""
    if path.endswith("pool_health.so"):
        return "pool_health.so"
    if path.endswith("/postgres"):
        return "server code" if "x" in perms else "server data"
    if perms.endswith("s"):
        return "shared memory"
    if path == "[heap]":
        return "heap"
    if path == "[stack]":
        return "stack"
    if path == "":
        return "anonymous (malloc, .bss)"
    return "libraries and other"


def referenced(pid):
    """Referenced kB of each kind of mapping of process pid."""
    out = collections.Counter()
    kind = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                kind = kind_of(m.group(2).strip(), m.group(1))
            elif line.startswith("Referenced:"):
                out[kind] += int(line.split()[1])
    return out


def measure(conninfo, n):
    import psycopg2

    conn = psycopg2.connect(conninfo, application_name="bench_pages")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]

    def run(statements, i):
        values = {"aid": 1 + (i * 7919) % 1000000, "tid": 1 + i % 100,
                  "bid": 1 + i % 10, "delta": i % 1000 - 500}
        for s in statements:
            cur.execute(s.format(**values))
            if cur.description is not None:
                cur.fetchall()

    for name, statements in WORKLOADS.items():
        # warm: caches, plans, and the very rows measured after (their
        # buffers loaded since the restart, their hint bits set), so that
        # no arm counts the reads that the one before it made for it
        for i in range(max(n, 300)):
            run(statements, i)
        total = collections.Counter()
        for i in range(n):
            with open("/proc/%d/clear_refs" % pid, "w") as f:
                f.write("1")
            run(statements, i)
            total.update(referenced(pid))
        for kind, kb in sorted(total.items()):
            print("%s\t%s\t%.2f" % (name, kind, kb / 4.0 / n))
        print("%s\t%s\t%.2f" % (name, "total", sum(total.values()) / 4.0 / n))


def report(args):
    labels, data = [], {}
    for a in args:
        label, path = a.split("=", 1)
        labels.append(label)
        with open(path) as f:
            for line in f:
                w, k, v = line.rstrip("\n").split("\t")
                data[(label, w, k)] = float(v)
    width = max(12, max(len(l) for l in labels) + 1)
    for w in WORKLOADS:
        kinds = sorted({k for (_, ww, k) in data if ww == w and k != "total"}) + ["total"]
        print("\n%s: pages touched per transaction (mean)" % w)
        print("%-28s" % "" + "".join("%*s" % (width, l) for l in labels)
              + "".join("%*s" % (width, l + " - " + labels[0]) for l in labels[1:]))
        for k in kinds:
            vals = [data.get((l, w, k), 0.0) for l in labels]
            print("%-28s" % k + "".join("%*.1f" % (width, v) for v in vals)
                  + "".join("%*.1f" % (width, v - vals[0]) for v in vals[1:]))
        # every transaction runs the library's hooks: an arm with the library
        # loaded that counts less than a page of it did not see its pages
        for l in labels[1:]:
            if data.get((l, w, "pool_health.so"), 0.0) < 1.0:
                print("warning: %s counts %.1f pages of pool_health.so per transaction, "
                      "which runs its hooks every time: the kernel's accessed bits were "
                      "cleared by something else (a DAMON monitor, kdamond?) and "
                      "these counts are too low" % (l, data.get((l, w, "pool_health.so"), 0.0)))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "measure":
        measure(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100)
    elif len(sys.argv) >= 3 and sys.argv[1] == "report":
        report(sys.argv[2:])
    else:
        sys.exit(__doc__)
