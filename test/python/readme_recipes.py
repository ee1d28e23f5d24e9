"""Run the README's Python recipes as written, with the real drivers: run by
test/t/023_drivers.pl (Debian's python3-sqlalchemy 1.4, python3-psycopg2,
python3-asyncpg; /usr/bin/python3).

    readme_recipes.py README HOST PORT DBNAME USER MONITOR_DSN REQUESTS

Each recipe is the ```python block after a line
"<!-- recipe: NAME ... -->" in the README.  Prints one line per result,
"RESULT name value", for the test to check:

- sqlcommenter: REQUESTS requests through SQLAlchemy with psycopg2, then
  with asyncpg, each a transaction of statements of every kind SQLAlchemy
  sends (text() with and without parameters, exec_driver_sql() without
  parameters, and with the execution option no_parameters, a Core select,
  an executemany insert), tagged with a route
  that URL-encodes to %-sequences; how many failed, with the recipe and
  with a listener that never doubles the % and with one that always
  does (the mistakes the recipe avoids); and, per kind of statement,
  whether the tags pool_health recorded for the transaction are the
  route's (pool_health.sessions): right, wrong, or error.
- sqlalchemy-why: a pooled connection ended by a policy idle in
  transaction, and one ended mid-statement, with psycopg2 and asyncpg:
  the limit_name why_ended() finds.
- asyncpg-why: a connection ended idle in transaction, noticed by the
  termination listener: the limit_name why_ended_asyncpg() finds.
"""
import asyncio
import re
import sys
import time

import asyncpg
import psycopg2
from sqlalchemy import (Column, Integer, MetaData, Table, create_engine, event,
                        exc, literal, select, text)
from sqlalchemy.ext.asyncio import create_async_engine

README, HOST, PORT, DBNAME, USER, MONITOR_DSN, REQUESTS = sys.argv[1:8]
REQUESTS = int(REQUESTS)
URL = f"{USER}@{HOST}:{PORT}/{DBNAME}"


def recipe(name):
    """The README's code for a recipe, compiled."""
    readme = open(README).read()
    m = re.search(r"<!-- recipe: " + re.escape(name) + r"\b.*?-->\n```python\n(.*?)```",
                  readme, re.S)
    if m is None:
        raise SystemExit(f"no recipe {name} in {README}")
    namespace = {}
    exec(compile(m.group(1), f"README recipe {name}", "exec"), namespace)
    return namespace


def result(name, value):
    print(f"RESULT {name} {value}", flush=True)


monitor = psycopg2.connect(MONITOR_DSN)
monitor.autocommit = True


def monitor_query(sql, args=()):
    cur = monitor.cursor()
    cur.execute(sql, args)
    return cur.fetchone()


def wait_gone(pid, timeout=30):
    """Until the backend has exited, and 0.1 s more (see driver_table.py)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if monitor_query("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))[0] == 0:
            time.sleep(0.1)
            return
        time.sleep(0.05)
    raise RuntimeError(f"session {pid} was never ended")


# --- sqlcommenter -------------------------------------------------------------

ROUTE = "/orders/{id}/50% off, it's *free*"
TAGS = {"route": ROUTE, "controller": "orders"}
metadata = MetaData()
tagged = Table("tagged", metadata, Column("i", Integer))
PID = "SELECT pid FROM pg_stat_activity WHERE pid = pg_backend_pid()"

# each kind of statement, as the first of a transaction (sync Connection)
KINDS = {
    "text_with_parameters": lambda c: c.execute(text("SELECT CAST(:x AS integer) FROM pg_class LIMIT 1"), {"x": 1}),
    "text_without_parameters": lambda c: c.execute(text("SELECT 1 FROM pg_class LIMIT 1")),
    "exec_driver_sql": lambda c: c.exec_driver_sql("SELECT 2 FROM pg_class LIMIT 1"),
    "no_parameters": lambda c: c.execution_options(no_parameters=True).exec_driver_sql(
        "SELECT 4 FROM pg_class LIMIT 1"),
    "core_select": lambda c: c.execute(select(literal(3)).select_from(text("pg_class")).limit(1)),
    "executemany": lambda c: c.execute(tagged.insert(), [{"i": 1}, {"i": 2}]),
}


def naive_sqlcommenter(engine, current_tags):
    """The same listener without the doubling of %."""
    from urllib.parse import quote

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def comment(conn, cursor, statement, parameters, context, executemany):
        pairs = ",".join("%s='%s'" % (quote(str(k), safe=""), quote(str(v), safe=""))
                         for k, v in sorted(current_tags().items()))
        return statement + " /*" + pairs + "*/", parameters


def doubling_sqlcommenter(engine, current_tags):
    """The same listener doubling every % (whether the driver formats or
    not)."""
    from urllib.parse import quote

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def comment(conn, cursor, statement, parameters, context, executemany):
        pairs = ",".join("%s='%s'" % (quote(str(k), safe=""), quote(str(v), safe=""))
                         for k, v in sorted(current_tags().items()))
        return statement + " /*" + pairs.replace("%", "%%") + "*/", parameters


def request(conn):
    for kind in KINDS.values():
        kind(conn)


def tags_of(conn):
    """The tags pool_health recorded for conn's current transaction."""
    pid = conn.exec_driver_sql(PID).scalar()
    return monitor_query("SELECT xact_tags FROM pool_health.sessions WHERE pid = %s", (pid,))[0]


def sqlcommenter_sync(add, label):
    engine = create_engine(f"postgresql+psycopg2://{URL}", future=True)
    add(engine, lambda: TAGS)
    failed = 0
    errors = set()
    for _ in range(REQUESTS):
        try:
            with engine.begin() as conn:
                request(conn)
        except Exception as e:      # noqa: BLE001 (counted)
            failed += 1
            errors.add(type(e).__name__ + ": " + str(e).splitlines()[0][:80])
    result(f"sqlcommenter.{label}.psycopg2.failed", f"{failed}/{REQUESTS}")
    for e in sorted(errors):
        result(f"sqlcommenter.{label}.psycopg2.error", e)
    for name, kind in KINDS.items():
        with engine.connect() as conn:
            try:
                kind(conn)
                tags = "right" if tags_of(conn) == TAGS else "wrong"
            except Exception:      # noqa: BLE001 (reported)
                tags = "error"
            conn.rollback()
        result(f"sqlcommenter.{label}.psycopg2.{name}", tags)
    engine.dispose()


async def sqlcommenter_async(add, label):
    engine = create_async_engine(f"postgresql+asyncpg://{URL}")
    add(engine.sync_engine, lambda: TAGS)
    failed = 0
    errors = set()
    for _ in range(REQUESTS):
        try:
            async with engine.begin() as conn:
                await conn.run_sync(request)
        except Exception as e:      # noqa: BLE001 (counted)
            failed += 1
            errors.add(type(e).__name__ + ": " + str(e).splitlines()[0][:80])
    result(f"sqlcommenter.{label}.asyncpg.failed", f"{failed}/{REQUESTS}")
    for e in sorted(errors):
        result(f"sqlcommenter.{label}.asyncpg.error", e)
    for name, kind in KINDS.items():
        async with engine.connect() as conn:
            try:
                await conn.run_sync(kind)
                tags = "right" if await conn.run_sync(tags_of) == TAGS else "wrong"
            except Exception:      # noqa: BLE001 (reported)
                tags = "error"
            await conn.rollback()
        result(f"sqlcommenter.{label}.asyncpg.{name}", tags)
    await engine.dispose()


add_sqlcommenter = recipe("sqlcommenter")["add_sqlcommenter"]
for add, label in ((add_sqlcommenter, "recipe"), (naive_sqlcommenter, "naive"),
                   (doubling_sqlcommenter, "doubling")):
    sqlcommenter_sync(add, label)
    asyncio.run(sqlcommenter_async(add, label))

# --- sqlalchemy-why -------------------------------------------------------------

why = recipe("sqlalchemy-why")


def sqla_why_sync(app, statement_runs):
    engine = create_engine(f"postgresql+psycopg2://{URL}",
                           connect_args={"application_name": app})
    why["remember_backends"](engine)
    try:
        with engine.connect() as conn:
            pid = conn.info["backend"][0]
            if statement_runs:
                conn.execute(text("SELECT pg_sleep(60)"))
            else:
                conn.execute(text("SELECT 1"))
                wait_gone(pid)
                conn.execute(text("SELECT 2"))
        found = "no error"
    except exc.DBAPIError as e:
        row = why["why_ended"](engine, e) if e.connection_invalidated else None
        found = row.limit_name if row is not None else None
    engine.dispose()
    return found


async def sqla_why_async(app, statement_runs):
    engine = create_async_engine(f"postgresql+asyncpg://{URL}",
                                 connect_args={"server_settings": {"application_name": app}})
    why["remember_backends"](engine.sync_engine)
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            pid = raw.info["backend"][0]
            if statement_runs:
                await conn.execute(text("SELECT pg_sleep(60)"))
            else:
                await conn.execute(text("SELECT 1"))
                await asyncio.get_running_loop().run_in_executor(None, wait_gone, pid)
                await conn.execute(text("SELECT 2"))
        found = "no error"
    except exc.DBAPIError as e:
        row = await why["why_ended_async"](engine, e) if e.connection_invalidated else None
        found = row.limit_name if row is not None else None
    await engine.dispose()
    return found


result("sqlalchemy-why.psycopg2.idle_in_transaction", sqla_why_sync("drv-iit-sqla", False))
result("sqlalchemy-why.psycopg2.mid-statement", sqla_why_sync("drv-xact-sqla", True))
result("sqlalchemy-why.asyncpg.idle_in_transaction",
       asyncio.run(sqla_why_async("drv-iit-sqla-async", False)))
result("sqlalchemy-why.asyncpg.mid-statement",
       asyncio.run(sqla_why_async("drv-xact-sqla-async", True)))

# --- asyncpg-why ------------------------------------------------------------------

apg = recipe("asyncpg-why")


async def asyncpg_why():
    def connect():
        return asyncpg.connect(host=HOST, port=int(PORT), database=DBNAME, user=USER,
                               server_settings={"application_name": "drv-iit-asyncpg-recipe"})

    conn, backend = await apg["connect_remembering"](connect)
    told = asyncio.get_running_loop().create_future()
    conn.add_termination_listener(
        lambda c: asyncio.get_running_loop().create_task(
            apg["why_ended_asyncpg"](connect, backend)).add_done_callback(
                lambda t: told.set_result(t.result())))
    await conn.execute("BEGIN")
    await conn.execute("SELECT 1")
    # nothing more from the application: the listener learns it alone
    row = await asyncio.wait_for(told, 30)
    return row["limit_name"] if row is not None else None


result("asyncpg-why.listener.idle_in_transaction", asyncio.run(asyncpg_why()))
