#!/usr/bin/env python3
"""End-to-end comparison of personalize-prep with DuckDB and Polars.

    benches/compare                      # build, generate 8M events, cases 1,2,3,4,6,8
    benches/compare --quick              # 1M events, 3 runs: a smoke check
    benches/compare --memory             # also case 5 (100 MB, 1 GB, 4 GB inputs; 1 GB of
                                         # as many users as events)
    scripts/test benches/compare --s3    # also case 7 (needs the local S3 server)
    benches/compare --markdown bench.md  # also write the tables to a file

What it does:
  1. `cargo build --release` of the binary and the data generator
     (examples/gen_events.rs); `--no-build` skips it.
  2. Generates the data set deterministically under target/bench-data/
     (`--data DIR`), or reuses one whose bench-set.json marker names the
     same events and seed: Firehose layout, concatenated JSON, NDJSON,
     gzip, Parquet and CSV; user ids both JSON ints and strings, an item id
     with a comma that the CSV must quote.
  3. Installs the pinned DuckDB and Polars into target/bench-venv and
     re-runs itself with that venv's python.
  4. For each case, rewrites its input files (so that the page cache holds
     them as freshly written ones, `--page-cache as-is` to leave it) and
     reads them once (warm cache), then runs each tool
     and ours alternately --runs times, each run a subprocess measured with
     wait4: wall time, CPU (user+sys) and peak RSS.
  5. Checks that every output holds the same rows as ours (count and an
     order-insensitive hash of the normalised values, computed by DuckDB),
     and exits 1 if one differs or a tool fails.
  6. Prints a markdown table per case: medians, MB/s, ratios against ours
     and the target each case is held to.

Ratios are `tool / reference` of wall and CPU medians, so for a peer the
wall ratio is our throughput multiple. Case 6 also runs `--threads 1`
pinned to one core (taskset): a `--threads 1` process still reads and
writes on a second thread, so the target compares two threads with that
one-core run. Peers' times include starting
Python and importing the library (measured once and shown in the header).

Standard library only, plus duckdb/polars (and boto3 for --s3) from the
bench venv.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "target" / "bench-venv"
PINS = {"duckdb": "2.0.1", "polars": "2.1.0"}
S3_PINS = {"boto3": "1.44.8"}

FORMATS = ["json", "ndjson", "gz", "parquet", "csv"]
MARKER = "bench-set.json"
DEFAULT_EVENTS = 8_000_000
QUICK_EVENTS = 1_000_000
# About 162 bytes per event as concatenated JSON: 100 MB, 1 GB, 4 GB.
MEMORY_EVENTS = [600_000, 6_000_000, 24_000_000]
S3_EVENTS = 6_000_000  # the 1 GB set

COLUMNS = "USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP"
MAP_ARGS = [
    "-m", "USER_ID=user_id",
    "-m", "ITEM_ID=item_id",
    "-m", "EVENT_TYPE=event_type",
    "-m", "EVENT_VALUE=event_value",
    "-m", "TIMESTAMP=ts",
    "--columns", COLUMNS,
]  # fmt: skip

# The peers' code. Each run is `python -c CODE ARGS...`, so the code below
# plus the printed arguments are the exact command.
DUCKDB_CODE = "import sys, duckdb; duckdb.sql(sys.argv[1])"
DUCKDB_COLUMNS = (
    "{user_id: 'VARCHAR', item_id: 'VARCHAR', event_type: 'VARCHAR', "
    "event_value: 'DOUBLE', ts: 'BIGINT'}"
)
# A CSV input's columns, all of them (DuckDB and Polars want them all).
DUCKDB_CSV_COLUMNS = DUCKDB_COLUMNS[:-1] + ", note: 'VARCHAR'}"
DUCKDB_SELECT = (
    "SELECT user_id AS USER_ID, item_id AS ITEM_ID, event_type AS EVENT_TYPE, "
    'event_value AS EVENT_VALUE, ts AS "TIMESTAMP"'
)
POLARS_CODE = """\
import sys, polars as pl
scan = {'ndjson': lambda p: pl.scan_ndjson(p, schema={
            'user_id': pl.String, 'item_id': pl.String, 'event_type': pl.String,
            'event_value': pl.Float64, 'ts': pl.Int64}),
        'parquet': pl.scan_parquet,
        'csv': lambda p: pl.scan_csv(p, schema={
            'user_id': pl.String, 'item_id': pl.String, 'event_type': pl.String,
            'event_value': pl.Float64, 'ts': pl.Int64, 'note': pl.String})}[sys.argv[1]]
scan(sys.argv[2]).select(
    pl.col('user_id').alias('USER_ID'), pl.col('item_id').alias('ITEM_ID'),
    pl.col('event_type').alias('EVENT_TYPE'), pl.col('event_value').alias('EVENT_VALUE'),
    pl.col('ts').alias('TIMESTAMP'),
).sink_csv(sys.argv[3])
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def die(msg: str) -> None:
    log(f"compare: {msg}")
    sys.exit(1)


# --- setup: venv, build, data ------------------------------------------------


def installed_versions(python: Path, names: list[str]) -> dict[str, str | None]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    out = subprocess.run([python, "-c", code, *names], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else dict.fromkeys(names)


def ensure_venv(pins: dict[str, str]) -> None:
    """Install the pinned packages into the bench venv (only what differs),
    then re-run this script with the venv's python if it is not that already."""
    python = VENV / "bin" / "python"
    if not python.exists():
        log(f"compare: creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    have = installed_versions(python, list(pins))
    missing = [f"{n}=={v}" for n, v in pins.items() if have.get(n) != v]
    if missing:
        log(f"compare: installing {' '.join(missing)} into {VENV}")
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *missing],
            check=True,
        )
    if Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(python, [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def build() -> None:
    cmd = ["cargo", "build", "--release", "--bin", "personalize-prep", "--example", "gen_events"]
    log(f"compare: {shlex.join(cmd)}")
    subprocess.run(cmd, cwd=ROOT, check=True)


def snapshot_binary(out_dir: Path) -> Path:
    """Copy the release binary, so that a rebuild during the run does not
    change what is measured halfway."""
    src = ROOT / "target" / "release" / "personalize-prep"
    for _ in range(60):
        if src.exists():
            break
        log(f"compare: waiting for {src}")
        time.sleep(5)
    else:
        die(f"{src} does not exist: build it, or drop --no-build")
    dst = out_dir / "personalize-prep"
    shutil.copy2(src, dst)
    return dst


def ensure_set(directory: Path, events: int, seed: int, formats: list[str], unique_users=False) -> None:
    """Generate DIRECTORY/<format>/... unless its marker says it holds these
    events already; formats missing from a matching set are added.
    `unique_users`: each event has a user of its own."""
    marker = directory / MARKER
    try:
        have = json.loads(marker.read_text())
    except (OSError, ValueError):
        have = {}
    same = (
        have.get("events") == events
        and have.get("seed") == seed
        and have.get("unique_users", False) == unique_users
    )
    have_formats = [f for f in have.get("formats", []) if (directory / f).is_dir()] if same else []
    todo = [f for f in formats if f not in have_formats]
    if not todo:
        log(f"compare: reusing {directory} ({events:,} events, seed {seed})")
        return
    gen = ROOT / "target" / "release" / "examples" / "gen_events"
    if not gen.exists():
        die(f"{gen} does not exist: build it, or drop --no-build")
    # Remove what a different or unfinished set left, and only the folders
    # the generator writes: a half-written set has no marker.
    marker.unlink(missing_ok=True)
    for f in FORMATS if not same else todo:
        shutil.rmtree(directory / f, ignore_errors=True)
    cmd = [gen, directory, "--events", str(events), "--seed", str(seed), "--formats", ",".join(todo)]
    if unique_users:
        cmd.append("--unique-users")
    log(f"compare: generating {shlex.join(map(str, cmd))}")
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    log(f"compare: generated in {time.perf_counter() - t:.1f} s")
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        json.dumps(
            {"events": events, "seed": seed, "formats": have_formats + todo}
            | ({"unique_users": True} if unique_users else {})
        )
        + "\n"
    )


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in files_under(path))


def warm(path: Path, rewrite: bool) -> None:
    """One untimed read of every input file, so all tools start from a warm
    page cache (dropping the cache needs root and a quiet machine).

    With `rewrite`, each file is first copied and renamed over itself, so
    the cache holds it as a freshly written file does. How the cache holds
    a file changes every tool's cost of reading it: a file written lately
    is cached in large pieces (folios of 16-64 KiB on this machine), one
    the kernel read back from the disk in 4 KiB pages, and this VM's kernel
    drops cold pages (DAMON) within minutes, so that a set left alone drifts
    to 4 KiB pages at its own pace. On the NDJSON set, our CPU on one core
    was 11% higher in 4 KiB pages (the kernel's copy and its look-ups per
    page), and the JSON set, 35% of it in larger pieces that day, looked
    cheaper than the NDJSON one by as much."""
    for p in files_under(path):
        if rewrite:
            tmp = p.with_name(f".{p.name}.rewrite")
            try:
                shutil.copyfile(p, tmp)
                os.replace(tmp, p)
            finally:
                tmp.unlink(missing_ok=True)
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass


# --- running -----------------------------------------------------------------


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_kib: int


@dataclass
class Tool:
    name: str
    argv: list[str]
    out: Path  # the CSV it writes
    input: Path  # a local folder holding the same data (for bytes and warm-up)
    events: int
    escape: str  # how quotes inside fields are escaped: '\\' (ours) or '"'
    env: dict[str, str] | None = None
    samples: list[Sample] = field(default_factory=list)

    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    def rss_mib(self) -> float:
        return max(s.rss_kib for s in self.samples) / 1024


class ToolFailed(Exception):
    pass


# Linux starts a child's peak RSS (ru_maxrss) at its parent's peak when it
# execs, so a child of this process, which holds DuckDB and Polars for the
# output check, would never report less than ~200 MiB. The tools are run
# instead by a bare Python started before those imports, which forks, execs
# and waits: what it reports is the tool's own peak, or ~5 MiB if less.
SPAWNER = r"""
import json, os, sys, time
for line in sys.stdin:
    req = json.loads(line)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
            os.execve(req["argv"][0], req["argv"], req["env"])
        except BaseException as e:
            os.write(2, f"cannot run {req['argv'][0]}: {e}\n".encode())
        os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    print(json.dumps({"code": os.waitstatus_to_exitcode(status), "wall": wall,
                      "cpu": ru.ru_utime + ru.ru_stime, "maxrss": ru.ru_maxrss}), flush=True)
"""


class Spawner:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", SPAWNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: list[str], env: dict[str, str] | None, stderr: Path) -> dict:
        req = {"argv": [str(a) for a in argv], "env": env or dict(os.environ), "stderr": str(stderr)}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            die("the spawner process died")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def run_once(spawner: Spawner, tool: Tool, err_path: Path) -> Sample:
    tool.out.unlink(missing_ok=True)  # a tool that writes nothing must not pass on a stale file
    # The peers do not sync their outputs: the kernel writes a previous
    # run's hundreds of MB back after it ended, and the disk then served
    # those writes during the next run (ours syncs, and waited behind
    # them). Every run starts with nothing dirty, outside the timing.
    os.sync()
    r = spawner.run(tool.argv, tool.env, err_path)
    if r["code"] != 0:
        tail = err_path.read_text(errors="replace")[-2000:]
        raise ToolFailed(f"{tool.name} exited with {r['code']}:\n{tail}")
    return Sample(r["wall"], r["cpu"], r["maxrss"])  # ru_maxrss: KiB on Linux


def run_alternating(spawner: Spawner, tools: list[Tool], runs: int, label: str, scratch: Path) -> None:
    for r in range(runs):
        for tool in tools:
            s = run_once(spawner, tool, scratch / "stderr.txt")
            tool.samples.append(s)
            log(
                f"  [{label}] run {r + 1}/{runs} {tool.name}: "
                f"{s.wall:.2f} s wall, {s.cpu:.2f} s CPU, {s.rss_kib / 1024:.0f} MiB"
            )


# --- output check --------------------------------------------------------------


def sql_str(s: str | Path) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def normalised(tool: Tool) -> str:
    """The rows of a tool's CSV, typed the same whatever the writer's style
    (ours prints 4 where the peers print 4.0, and escapes quotes with a
    backslash where they double them)."""
    return (
        'SELECT USER_ID, ITEM_ID, EVENT_TYPE, CAST(EVENT_VALUE AS DOUBLE) AS EVENT_VALUE, '
        'CAST("TIMESTAMP" AS BIGINT) AS "TIMESTAMP" '
        f"FROM read_csv({sql_str(tool.out)}, header=true, all_varchar=true, delim=',', "
        f"quote='\"', escape={sql_str(tool.escape)})"
    )


def digest(con, tool: Tool) -> tuple[int, int]:
    """(rows, order-insensitive hash) of a tool's output."""
    q = (
        'SELECT count(*), coalesce(sum(hash(USER_ID, ITEM_ID, EVENT_TYPE, EVENT_VALUE, "TIMESTAMP")'
        f")::HUGEINT, 0) FROM ({normalised(tool)})"
    )
    rows, h = con.execute(q).fetchall()[0]
    return int(rows), int(h)


def difference(con, ref: Tool, other: Tool) -> list[str]:
    """A few rows found in one output and not the other, to show what differs."""
    lines = []
    for a, b, what in ((ref, other, f"only in {ref.name}"), (other, ref, f"only in {other.name}")):
        q = f"SELECT * FROM (({normalised(a)}) EXCEPT ALL ({normalised(b)})) LIMIT 5"
        lines += [f"    {what}: {row}" for row in con.execute(q).fetchall()]
    return lines


class Checker:
    """Compares every output with its case's reference (ours) and with every
    other output made from the same data set."""

    def __init__(self) -> None:
        import duckdb

        self.duckdb = duckdb
        self.by_set: dict[Path, tuple[str, int, int]] = {}
        self.failures: list[str] = []

    def check(self, tools: list[Tool], label: str) -> list[str]:
        con = self.duckdb.connect()
        notes = []
        try:
            ref = tools[0]
            got: dict[str, tuple[int, int] | None] = {}
            for t in tools:
                try:
                    got[t.name] = digest(con, t)
                except self.duckdb.Error as e:
                    got[t.name] = None
                    first = "\n".join(str(e).splitlines()[:3])
                    self.fail(f"[{label}] {t.name}: its CSV does not read as the expected columns: {first}")
            for t in tools:
                d = got[t.name]
                if d is None:
                    continue
                rows, h = d
                if rows != t.events:
                    self.fail(f"[{label}] {t.name} wrote {rows:,} rows, not {t.events:,}")
                same_set = t.input.resolve().parent == ref.input.resolve().parent
                if t is not ref and same_set and got[ref.name] is not None and d != got[ref.name]:
                    self.fail(
                        f"[{label}] {t.name} differs from {ref.name}: "
                        f"{rows:,} rows, hash {h:x} against {got[ref.name][0]:,}, {got[ref.name][1]:x}\n"
                        + "\n".join(difference(con, ref, t))
                    )
                if t is ref or not same_set:
                    # The same events in another format or case must give the same rows.
                    seen = self.by_set.setdefault(t.input.resolve().parent, (f"{label} {t.name}", rows, h))
                    if (rows, h) != seen[1:]:
                        self.fail(f"[{label}] {t.name} differs from {seen[0]} on the same events")
            ok = [n for n, d in got.items() if d is not None]
            if got[ref.name] is not None:
                rows, h = got[ref.name]
                notes.append(
                    f"Output check: {len(ok)} of {len(tools)} outputs read; "
                    f"{ref.name}: {plural(rows, 'row')}, order-insensitive hash {h:032x}."
                )
        finally:
            con.close()
        return notes

    def fail(self, msg: str) -> None:
        log(f"compare: MISMATCH {msg}")
        self.failures.append(msg)


# --- report ------------------------------------------------------------------


@dataclass
class Target:
    tool: str
    metric: str  # "wall" or "cpu": the ratio tool/reference of that median
    op: str  # ">=" or "<="
    value: float
    text: str


def ratio(tool: Tool, ref: Tool, metric: str) -> float:
    if metric == "wall":
        return tool.wall() / ref.wall()
    return tool.cpu() / ref.cpu()


def table(tools: list[Tool], ref: Tool) -> list[str]:
    lines = [
        f"| tool | wall s, median (min–max) | CPU s, median | peak RSS MiB | MB/s | M events/s "
        f"| wall × {ref.name} | CPU × {ref.name} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in tools:
        walls = [s.wall for s in t.samples]
        mb = tree_bytes(t.input) / 1e6
        lines.append(
            f"| {t.name} | {t.wall():.2f} ({min(walls):.2f}–{max(walls):.2f}) | {t.cpu():.2f} "
            f"| {t.rss_mib():,.0f} | {mb / t.wall():,.0f} | {t.events / 1e6 / t.wall():.2f} "
            f"| {ratio(t, ref, 'wall'):.2f} | {ratio(t, ref, 'cpu'):.2f} |"
        )
    return lines


def memory_table(tools: list[Tool]) -> list[str]:
    lines = [
        "| input | events | wall s, median | CPU s, median | peak RSS MiB | MB/s |",
        "|---|---|---|---|---|---|",
    ]
    for t in tools:
        size = tree_bytes(t.input)
        lines.append(
            f"| {human(size)} | {t.events:,} | {t.wall():.2f} | {t.cpu():.2f} "
            f"| {t.rss_mib():,.0f} | {size / 1e6 / t.wall():,.0f} |"
        )
    first, last = tools[0], tools[-1]
    lines += [
        "",
        f"- Peak RSS grows {last.rss_mib() / first.rss_mib():.2f}× while the input grows "
        f"{tree_bytes(last.input) / tree_bytes(first.input):.0f}×.",
    ]
    return lines


def verdicts(tools: list[Tool], targets: list[Target]) -> list[str]:
    by_name = {t.name: t for t in tools}
    out = []
    for tg in targets:
        r = ratio(by_name[tg.tool], tools[0], tg.metric)
        ok = r >= tg.value if tg.op == ">=" else r <= tg.value
        out.append(f"- Target: {tg.text} ({tg.op} {tg.value}): **{r:.2f}** — {'met' if ok else 'MISSED'}")
    return out


def commands(tools: list[Tool]) -> list[str]:
    lines = ["", "<details><summary>Commands</summary>", ""]
    for t in tools:
        argv = list(t.argv)
        if len(argv) > 2 and argv[1] == "-c" and argv[2] == DUCKDB_CODE:
            lines += [f"{t.name}: `{argv[0]} -c {shlex.quote(argv[2])} SQL` with SQL:", "", "```sql"]
            lines += [argv[3], "```", ""]
        elif len(argv) > 2 and argv[1] == "-c":
            lines += [f"{t.name}: `{argv[0]} -c CODE {shlex.join(argv[3:])}` with CODE:", "", "```python"]
            lines += [argv[2].rstrip("\n"), "```", ""]
        else:
            env = [f"{k}={v}" for k, v in (t.env or {}).items() if os.environ.get(k) != v]
            lines += [f"{t.name}:", "", "```sh", shlex.join([*env, *argv]), "```", ""]
    lines += ["</details>"]
    return lines


class Report:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, lines: list[str]) -> None:
        for line in lines:
            print(line, flush=True)
        self.lines += lines
        if self.path:
            self.path.write_text("\n".join(self.lines) + "\n")


# --- the cases ---------------------------------------------------------------


def duckdb_tool(name, source_sql, src: Path, out: Path, events: int) -> Tool:
    sql = f"COPY ({DUCKDB_SELECT} FROM {source_sql}) TO {sql_str(out)} (HEADER)"
    return Tool(name, [sys.executable, "-c", DUCKDB_CODE, sql], out, src, events, '"')


def polars_tool(name, kind: str, glob: str, src: Path, out: Path, events: int) -> Tool:
    return Tool(name, [sys.executable, "-c", POLARS_CODE, kind, glob, str(out)], out, src, events, '"')


@dataclass
class Ctx:
    binary: Path
    data: Path  # the main set
    events: int
    seed: int
    out: Path  # where outputs go
    mem_root: Path
    mem_events: list[int]
    s3_events: int

    def ours(self, name, src: Path | str, out: Path, events: int, local: Path, extra=(), env=None) -> Tool:
        argv = [str(self.binary), "convert", str(src), *MAP_ARGS, "-o", str(out), "-q", *extra]
        return Tool(name, argv, out, local, events, "\\", env)

    def csv(self, case: str, tool: str) -> Path:
        return self.out / f"{case}-{tool}.csv"


def case_json(c: Ctx):
    src = c.data / "json"
    cols = f"columns={DUCKDB_COLUMNS}"
    read = f"read_json({sql_str(src / '**')}, format='unstructured', {cols})"
    tools = [
        c.ours("ours", src, c.csv("1", "ours"), c.events, src),
        duckdb_tool("DuckDB", read, src, c.csv("1", "duckdb"), c.events),
    ]
    return "1. Concatenated JSON (Firehose) → CSV", tools, [
        Target("DuckDB", "wall", ">=", 3.0, "DuckDB wall / ours wall"),
    ]


def case_ndjson(c: Ctx):
    src = c.data / "ndjson"
    read = f"read_json({sql_str(src / '**')}, format='newline_delimited', columns={DUCKDB_COLUMNS})"
    tools = [
        c.ours("ours", src, c.csv("2", "ours"), c.events, src),
        duckdb_tool("DuckDB", read, src, c.csv("2", "duckdb"), c.events),
        polars_tool("Polars", "ndjson", str(src / "**" / "*"), src, c.csv("2", "polars"), c.events),
    ]
    return "2. NDJSON → CSV", tools, [
        Target("DuckDB", "wall", ">=", 3.0, "DuckDB wall / ours wall"),
        Target("Polars", "wall", ">=", 3.0, "Polars wall / ours wall"),
    ]


def case_parquet(c: Ctx):
    src = c.data / "parquet"
    glob = src / "**" / "*.parquet"
    tools = [
        c.ours("ours", src, c.csv("3", "ours"), c.events, src),
        polars_tool("Polars", "parquet", str(glob), src, c.csv("3", "polars"), c.events),
        duckdb_tool("DuckDB (for information)", f"read_parquet({sql_str(glob)})", src, c.csv("3", "duckdb"), c.events),
    ]
    return "3. Parquet → CSV", tools, [
        Target("Polars", "wall", ">=", 1.5, "Polars wall / ours wall"),
    ]


def case_gzip(c: Ctx):
    src = c.data / "gz"
    read = (
        f"read_json({sql_str(src / '**' / '*.gz')}, format='unstructured', "
        f"compression='gzip', columns={DUCKDB_COLUMNS})"
    )
    tools = [
        c.ours("ours", src, c.csv("4", "ours"), c.events, src),
        duckdb_tool("DuckDB", read, src, c.csv("4", "duckdb"), c.events),
    ]
    return "4. Gzip concatenated JSON → CSV (MB/s of compressed bytes)", tools, [
        Target("DuckDB", "wall", ">=", 2.0, "DuckDB wall / ours wall"),
    ]


def case_threads(c: Ctx):
    src = c.data / "json"
    tools = [
        c.ours("ours --threads 2", src, c.csv("6", "t2"), c.events, src, ["--threads", "2"]),
        c.ours("ours --threads 1", src, c.csv("6", "t1"), c.events, src, ["--threads", "1"]),
    ]
    # `--threads 1` is one decoding thread, but the reader and the writer
    # still run beside it on the other core. One thread's throughput is the
    # whole process on one core: the target is measured against that run.
    one = c.ours("ours --threads 1, one core", src, c.csv("6", "c1"), c.events, src, ["--threads", "1"])
    cpu = min(os.sched_getaffinity(0))
    one.argv = [shutil.which("taskset") or die("case 6 needs taskset (util-linux)"), "-c", str(cpu), *one.argv]
    tools.append(one)
    return "6. Thread scaling, concatenated JSON", tools, [
        Target(one.name, "wall", ">=", 1.8, "throughput with 2 threads / with one core"),
    ]


def case_memory(c: Ctx):
    tools = []
    for n in c.mem_events:
        d = set_dir(c.mem_root, n, c.seed)
        ensure_set(d, n, c.seed, ["json"])
        size = tree_bytes(d / "json")
        name = f"ours, {human(size)} ({n:,} events)"
        tools.append(c.ours(name, d / "json", c.csv("5", str(n)), n, d / "json"))
    # Each event a user of its own: the per-user counts stop at 2 Mi users.
    n = c.mem_events[len(c.mem_events) // 2]
    d = set_dir(c.mem_root, n, c.seed, unique_users=True)
    ensure_set(d, n, c.seed, ["json"], unique_users=True)
    name = f"ours, {human(tree_bytes(d / 'json'))} ({n:,} events, as many users)"
    tools.append(c.ours(name, d / "json", c.csv("5", f"{n}-users"), n, d / "json"))
    return "5. Peak memory of ours by input size, concatenated JSON", tools, []


def case_s3(c: Ctx):
    endpoint = os.environ.get("PP_TEST_S3_ENDPOINT")
    bucket = os.environ.get("PP_TEST_S3_BUCKET")
    if not endpoint or not bucket:
        die("--s3 needs the local S3 server: run `scripts/test benches/compare --s3`")
    d = set_dir(c.mem_root, c.s3_events, c.seed)
    ensure_set(d, c.s3_events, c.seed, ["json"])
    local = d / "json"
    prefix = f"bench/{d.name}/json/"
    upload(endpoint, bucket, local, prefix)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE", "GOOGLE_"))}
    env |= {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testkey",
        "AWS_SECRET_ACCESS_KEY": "testsecret",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(c.out / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(c.out / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    tools = [
        c.ours("ours, local folder", local, c.csv("7", "local"), c.s3_events, local),
        c.ours("ours, from S3", f"s3://{bucket}/{prefix}", c.csv("7", "s3"), c.s3_events, local, env=env),
    ]
    title = f"7. Concatenated JSON from S3 (local SeaweedFS, s3://{bucket}/{prefix}) against a local folder"
    return title, tools, [
        Target(tools[1].name, "cpu", "<=", 1.3, "CPU seconds from S3 / from a local folder"),
    ]


def upload(endpoint: str, bucket: str, local: Path, prefix: str) -> None:
    """Put the set under s3://bucket/prefix unless the same keys and sizes
    are there already."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testkey",
        aws_secret_access_key="testsecret",
        region_name="us-east-1",
    )
    want = {prefix + p.relative_to(local).as_posix(): p for p in files_under(local)}
    have = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        have |= {o["Key"]: o["Size"] for o in page.get("Contents", [])}
    todo = [k for k, p in want.items() if have.get(k) != p.stat().st_size]
    if set(have) - set(want):
        die(f"s3://{bucket}/{prefix} holds objects that are not in {local}")
    if not todo:
        log(f"compare: s3://{bucket}/{prefix} is up to date")
        return
    log(f"compare: uploading {len(todo)} files to s3://{bucket}/{prefix}")
    t = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.upload_file(str(want[k]), bucket, k), todo))
    log(f"compare: uploaded in {time.perf_counter() - t:.1f} s")


def case_csv(c: Ctx):
    src = c.data / "csv"
    glob = src / "**" / "*.csv"
    read = f"read_csv({sql_str(glob)}, header=true, columns={DUCKDB_CSV_COLUMNS})"
    tools = [
        c.ours("ours", src, c.csv("8", "ours"), c.events, src),
        duckdb_tool("DuckDB", read, src, c.csv("8", "duckdb"), c.events),
        polars_tool("Polars", "csv", str(glob), src, c.csv("8", "polars"), c.events),
    ]
    # No target: the cases are 1 to 7; this one is for information.
    return "8. CSV → CSV (for information)", tools, []


CASES = {
    "1": case_json,
    "2": case_ndjson,
    "3": case_parquet,
    "4": case_gzip,
    "5": case_memory,
    "6": case_threads,
    "7": case_s3,
    "8": case_csv,
}


def human(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def set_dir(root: Path, events: int, seed: int, unique_users=False) -> Path:
    return root / f"events-{events}-seed-{seed}{'-unique-users' if unique_users else ''}"


# --- machine -------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def git_rev() -> str:
    def git(*args):
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + ("+uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def import_time(module: str) -> float:
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def header(args, binary: Path, cases: list[str], data: Path) -> list[str]:
    import duckdb
    import polars

    ours = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    sha = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        "## End-to-end comparison",
        "",
        f"- Command: `benches/compare {shlex.join(sys.argv[1:])}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"- Machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_model()}, "
        f"{mem_total()} RAM, Linux {platform.release()}; load average at start {load}",
        f"- Ours: {ours} (git {git_rev()}, binary sha256 {sha}…)",
        f"- Peers: DuckDB {duckdb.__version__}, Polars {polars.__version__}, Python {platform.python_version()}; "
        f"their times include starting Python and importing the library "
        f"(`import duckdb` {import_time('duckdb'):.2f} s, `import polars` {import_time('polars'):.2f} s)",
        f"- Data: {data} — {args.events:,} events, seed {args.seed}, made by examples/gen_events.rs; "
        f"warm page cache (each input read once before its case"
        + (", after a rewrite of each of its files, so cached as freshly written)" if args.page_cache == "written" else ", cached as it was)"),
        f"- Method: {args.runs} runs per tool, tools alternating within each round; each run a "
        f"subprocess measured with wait4 (CPU = user + sys, peak = max RSS over the runs; "
        f"a peak under ~5 MiB would show as ~5 MiB, the launcher's); "
        f"ratio = tool median / reference (first row) median, so a peer's wall ratio is our "
        f"throughput multiple; MB/s = input bytes on disk / wall median",
        f"- Cases: {', '.join(cases)}",
    ]


# --- main ----------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benches/compare",
        description="Compare personalize-prep with DuckDB and Polars end to end.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--runs", type=int, help="runs per tool (default 5; 3 with --quick)")
    p.add_argument("--events", type=int, help=f"events in the main set (default {DEFAULT_EVENTS:,}; {QUICK_EVENTS:,} with --quick)")
    p.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    p.add_argument("--quick", action="store_true", help="1M events and 3 runs: a smoke check")
    p.add_argument("--data", type=Path, help="the main data set's folder (default target/bench-data/events-N-seed-S); "
                   "its json/, ndjson/, gz/ and parquet/ are replaced unless its bench-set.json "
                   "names the same events and seed")  # fmt: skip
    p.add_argument("--mem-data", type=Path, default=ROOT / "target" / "bench-data",
                   help="where the sets of --memory and --s3 go (default target/bench-data)")  # fmt: skip
    p.add_argument("--memory", action="store_true", help="also case 5: peak memory on 100 MB, 1 GB and 4 GB, and on 1 GB with a user an event")
    p.add_argument("--memory-events", default=",".join(map(str, MEMORY_EVENTS)),
                   help="events of the --memory sets (default %(default)s)")  # fmt: skip
    p.add_argument("--s3", action="store_true", help="also case 7: read from the local S3 server (run under scripts/test)")
    p.add_argument("--s3-events", type=int, default=S3_EVENTS, help="events of the --s3 set (default %(default)s, 1 GB)")
    p.add_argument("--cases", help="comma-separated cases to run (default 1,2,3,4,6,8 plus 5 and 7 when asked)")
    p.add_argument("--no-build", action="store_true", help="use the binaries in target/release as they are")
    p.add_argument("--page-cache", choices=["written", "as-is"], default="written",
                   help="before each case, rewrite its input files so that they are cached as freshly written "
                        "(default), or leave the cache as it is")
    p.add_argument("--markdown", type=Path, help="also write the report to this file")
    p.add_argument("--out", type=Path, default=ROOT / "target" / "bench-out", help="scratch folder for outputs")
    p.add_argument("--keep", action="store_true", help="keep the output CSVs")
    a = p.parse_args()
    a.runs = a.runs or (3 if a.quick else 5)
    a.events = a.events or (QUICK_EVENTS if a.quick else DEFAULT_EVENTS)
    a.data = (a.data or set_dir(ROOT / "target" / "bench-data", a.events, a.seed)).resolve()
    a.mem_data = a.mem_data.resolve()
    a.out = a.out.resolve()
    if a.cases:
        a.case_list = a.cases.split(",")
        unknown = [c for c in a.case_list if c not in CASES]
        if unknown:
            p.error(f"unknown case {','.join(unknown)}: the cases are 1-7")
    else:
        a.case_list = ["1", "2", "3", "4"] + (["5"] if a.memory else []) + ["6"] + (["7"] if a.s3 else []) + ["8"]
    a.mem_list = [int(x) for x in a.memory_events.split(",")]
    return a


def main() -> int:
    args = parse_args()
    ensure_venv(PINS | (S3_PINS if "7" in args.case_list else {}))
    spawner = Spawner()  # before anything large is imported
    if not args.no_build:
        build()
    args.out.mkdir(parents=True, exist_ok=True)
    fmt = {"1": "json", "2": "ndjson", "3": "parquet", "4": "gz", "6": "json", "8": "csv"}
    main_formats = sorted({fmt[c] for c in args.case_list if c in fmt})
    if main_formats:
        ensure_set(args.data, args.events, args.seed, main_formats)
    binary = snapshot_binary(args.out)
    ctx = Ctx(binary, args.data, args.events, args.seed, args.out, args.mem_data, args.mem_list, args.s3_events)
    if os.getloadavg()[0] > 0.5:
        log(f"compare: the load average is {os.getloadavg()[0]:.2f}: other work is running, wall times will be noisy")
    report = Report(args.markdown)
    report.add(header(args, binary, args.case_list, args.data))
    checker = Checker()
    for case in args.case_list:
        title, tools, targets = CASES[case](ctx)
        log(f"compare: case {title}")
        for local in dict.fromkeys(t.input for t in tools):
            warm(local, args.page_cache == "written")
        try:
            run_alternating(spawner, tools, args.runs, f"case {case}", args.out)
        except ToolFailed as e:
            checker.fail(f"[case {case}] {e}")
            report.add(["", f"### {title}", "", f"FAILED: {e}"])
            continue
        notes = checker.check(tools, f"case {case}")
        sizes = sorted({f"{human(tree_bytes(t.input))} in {plural(len(files_under(t.input)), 'file')}" for t in tools})
        intro = [f"Input: {', '.join(sizes)}.", ""] if case != "5" else []
        report.add(["", f"### {title}", "", *intro, *(memory_table(tools) if case == "5" else table(tools, tools[0])), "",
                    *verdicts(tools, targets), *(f"- {n}" for n in notes), *commands(tools)])  # fmt: skip
        if not args.keep:
            for t in tools:
                t.out.unlink(missing_ok=True)
                t.out.with_suffix(".avsc").unlink(missing_ok=True)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    spawner.close()
    report.add(["", f"Load average at the end: {load}."])
    if checker.failures:
        report.add(["", "**FAILED:**", *(f"- {f}" for f in checker.failures)])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
