"""What each driver tells an application whose session a pool_health policy
ended: run by test/t/023_drivers.pl with the real drivers (Debian's
python3-psycopg2, python3-psycopg, python3-asyncpg; /usr/bin/python3).

    driver_table.py HOST PORT DBNAME USER MONITOR_DSN

The server has three policies for USER's sessions, by application_name:
drv-iit-% (idle_in_transaction_timeout), drv-idle-% (idle_timeout) and
drv-xact-% (transaction_timeout, ended mid-statement).  For each driver and
case, the session is ended by the worker, the application runs its next
statement (or was running one), and what the driver raises is printed as a
row of the README's table (Markdown), between the lines TABLE BEGIN and
TABLE END.  Then the application reconnects with the same role and looks
its old backend pid up in pool_health.my_terminations: one line LOOKUP per
case, with the limit_name found and how many tries it took (one every 50
ms).
"""
import asyncio
import sys
import time

import asyncpg
import psycopg
import psycopg2

HOST, PORT, DBNAME, USER, MONITOR_DSN = sys.argv[1:6]
PORT = int(PORT)
DSN = f"host={HOST} port={PORT} dbname={DBNAME} user={USER}"

CASES = [
    # (case, application_name prefix, the limit that ends it)
    ("idle in transaction", "drv-iit", "idle_in_transaction_timeout"),
    ("idle", "drv-idle", "idle_timeout"),
    ("mid-statement", "drv-xact", "transaction_timeout"),
]

LOOKUP = ("SELECT limit_name FROM pool_health.my_terminations "
          "WHERE pid = %s ORDER BY at DESC LIMIT 1")


def wait_gone(pid, timeout=30):
    """Until the backend has exited (seen by a superuser's connection), and
    0.1 s more: the application's next statement comes after the session
    ended, not in the instant its connection closes (asyncpg may then raise
    InternalClientError "cannot switch to state ...": see the README)."""
    mon = psycopg2.connect(MONITOR_DSN)
    mon.autocommit = True
    cur = mon.cursor()
    deadline = time.time() + timeout
    while time.time() < deadline:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        if cur.fetchone()[0] == 0:
            mon.close()
            time.sleep(0.1)
            return
        time.sleep(0.05)
    raise RuntimeError(f"session {pid} was never ended")


def public_name(cls):
    """The shortest importable name of an exception class."""
    package = cls.__module__.split(".")[0]
    for module in (package, package + ".exceptions", cls.__module__):
        mod = sys.modules.get(module)
        if mod is not None and getattr(mod, cls.__name__, None) is cls:
            return f"{module}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def cell_attr(obj, path):
    """`e.attr`: value, or `e.attr`: absent."""
    value = obj
    for part in path.split("."):
        if not hasattr(value, part):
            return f"`e.{path}`: absent"
        value = getattr(value, part)
    return f"`e.{path}`: `{value!r}`"


def row(driver, case, e, sqlstate_attr, detail_attr):
    text = str(e)
    message = text.splitlines()[0].strip() if text else ""
    detail = cell_attr(e, detail_attr)
    if "pool_health ended this session" in text:
        detail += "; in `str(e)`"
    return (f"| {driver} | {case} | `{public_name(type(e))}` | `{message}` | "
            f"{cell_attr(e, sqlstate_attr)} | {detail} |")


def lookup_sync(connect, pid):
    """Reconnect with the same role and find the old pid."""
    for tries in range(1, 41):
        conn = connect()
        try:
            if isinstance(conn, psycopg2.extensions.connection):
                cur = conn.cursor()
                cur.execute(LOOKUP, (pid,))
                found = cur.fetchone()
            else:
                found = conn.execute(LOOKUP, (pid,)).fetchone()
        finally:
            conn.close()
        if found is not None:
            return found[0], tries
        time.sleep(0.05)
    return None, tries


def run_psycopg2(case, app, limit):
    conn = psycopg2.connect(DSN, application_name=f"{app}-psycopg2")
    conn.autocommit = case == "idle"
    pid = conn.info.backend_pid
    cur = conn.cursor()
    try:
        if case == "mid-statement":
            cur.execute("SELECT pg_sleep(60)")
        else:
            cur.execute("SELECT 1")
            wait_gone(pid)
            cur.execute("SELECT 2")
        raise RuntimeError("no error")
    except psycopg2.Error as e:
        error = e
    return row(f"psycopg2 {psycopg2.__version__.split()[0]}", case, error,
               "pgcode", "diag.message_detail"), pid, \
        lookup_sync(lambda: psycopg2.connect(DSN), pid)


def run_psycopg(case, app, limit):
    conn = psycopg.connect(DSN, application_name=f"{app}-psycopg",
                           autocommit=case == "idle")
    pid = conn.info.backend_pid
    try:
        if case == "mid-statement":
            conn.execute("SELECT pg_sleep(60)")
        else:
            conn.execute("SELECT 1")
            wait_gone(pid)
            conn.execute("SELECT 2")
        raise RuntimeError("no error")
    except psycopg.Error as e:
        error = e
    return row(f"psycopg {psycopg.__version__}", case, error,
               "sqlstate", "diag.message_detail"), pid, \
        lookup_sync(lambda: psycopg.connect(DSN), pid)


async def run_asyncpg(case, app, limit):
    conn = await asyncpg.connect(host=HOST, port=PORT, database=DBNAME, user=USER,
                                 server_settings={"application_name": f"{app}-asyncpg"})
    pid = conn.get_server_pid()
    fired = []
    conn.add_termination_listener(lambda c: fired.append(c))
    try:
        if case == "mid-statement":
            await conn.execute("SELECT pg_sleep(60)")
        else:
            if case == "idle in transaction":
                await conn.execute("BEGIN")
            await conn.execute("SELECT 1")
            await asyncio.get_running_loop().run_in_executor(None, wait_gone, pid)
            await conn.execute("SELECT 2")
        raise RuntimeError("no error")
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        error = e
    await asyncio.sleep(0)
    if not fired:
        raise RuntimeError("asyncpg's termination listener did not fire")
    for tries in range(1, 41):
        conn = await asyncpg.connect(host=HOST, port=PORT, database=DBNAME, user=USER)
        found = await conn.fetchrow(LOOKUP.replace("%s", "$1"), pid)
        await conn.close()
        if found is not None:
            break
        await asyncio.sleep(0.05)
    return row(f"asyncpg {asyncpg.__version__}", case, error,
               "sqlstate", "detail"), pid, \
        ((found[0] if found else None), tries)


def main():
    rows = []
    lookups = []
    for driver, run in (("psycopg2", run_psycopg2), ("psycopg", run_psycopg),
                        ("asyncpg", lambda *a: asyncio.run(run_asyncpg(*a)))):
        for case, app, limit in CASES:
            text, pid, (found, tries) = run(case, app, limit)
            rows.append(text)
            lookups.append(f"LOOKUP {driver} {case.replace(' ', '_')} pid={pid} "
                           f"expected={limit} found={found} tries={tries}")
    print("TABLE BEGIN")
    print("| driver | session ended while | exception | message (first line) | SQLSTATE | DETAIL |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(r)
    print("TABLE END")
    for line in lookups:
        print(line)


main()
