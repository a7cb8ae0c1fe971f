#!/usr/bin/env python3
"""personalize-prep on Spark: plan, one task per shard, commit.

Written by `personalize-prep spark-job`. Every byte of data goes through the
personalize-prep binary and its own object-store client, so the cluster
needs no Hadoop S3 connector; Spark only schedules and retries the shards.

    spark-submit --files ./personalize-prep driver.py \\
        --binary ./personalize-prep --run s3://prep/run-1/ --shards 16 \\
        [--output s3://prep/interactions.csv] -- s3://raw/useritem/ [plan options]

The binary is shipped with the job (--files, found on executors with
SparkFiles) or must exist at --binary on every node. As an AWS Glue job:
upload the binary and this script to S3, set --extra-files to the binary
and pass the same arguments as job parameters.
"""

import argparse
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

# Set by `spark-job --plan RUN`: an existing plan, converted and committed.
BAKED_RUN = __RUN__
BAKED_SHARDS = __SHARDS__


def parse_args():
    p = argparse.ArgumentParser(description="personalize-prep on Spark")
    p.add_argument("--binary", default="personalize-prep",
                   help="the personalize-prep binary on the driver (and, unless shipped "
                        "with --files, at the same path on every executor)")
    p.add_argument("--run", default=BAKED_RUN, help="the run folder (plan -o)")
    p.add_argument("--shards", type=int, default=BAKED_SHARDS, help="how many shards")
    p.add_argument("--output", help="commit -o DEST: assemble one CSV (else a folder import)")
    p.add_argument("--master", help="Spark master when spark-submit gives none, e.g. local[2]")
    p.add_argument("--storage-option", action="append", default=[],
                   help="KEY=VALUE passed to every personalize-prep call")
    p.add_argument("plan_args", nargs=argparse.REMAINDER,
                   help="-- SOURCE... [convert options] for plan")
    a = p.parse_args()
    if a.plan_args[:1] == ["--"]:
        a.plan_args = a.plan_args[1:]
    if a.run is None or a.shards is None:
        p.error("--run and --shards are needed (or a driver written with spark-job --plan)")
    return a


def executable(binary):
    """The binary on this node: the shipped copy if there is one, made executable."""
    path = binary
    try:
        from pyspark import SparkFiles
        shipped = SparkFiles.get(os.path.basename(binary))
        if os.path.exists(shipped):
            path = shipped
    except Exception:
        pass
    if not os.path.exists(path):
        path = shutil.which(path) or path
    if not os.access(path, os.X_OK):
        copy = os.path.join(tempfile.mkdtemp(prefix="personalize-prep-"), "personalize-prep")
        shutil.copyfile(path, copy)
        os.chmod(copy, os.stat(copy).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        path = copy
    return path


def run_shard(binary, run, storage, shard):
    from pyspark import TaskContext
    ctx = TaskContext.get()
    attempt = ctx.attemptNumber() if ctx is not None else 0
    cmd = [executable(binary), "convert", "--plan", run, "--shard", str(shard), "-q"] + storage
    started = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    # One write of the whole line: print() writes the text and its newline
    # apart, and two executors sharing a stderr pipe then run lines together.
    line = ("personalize-prep-spark: shard %d attempt %d on %s pid %d: exit %d in %.2f s\n"
            % (shard, attempt, socket.gethostname(), os.getpid(), done.returncode,
               time.time() - started))
    sys.stderr.flush()
    os.write(2, line.encode())
    if done.returncode != 0:
        raise RuntimeError("shard %d failed (exit %d): %s"
                           % (shard, done.returncode, done.stderr.strip()))
    return shard


def main():
    a = parse_args()
    storage = [x for o in a.storage_option for x in ("--storage-option", o)]
    from pyspark.sql import SparkSession
    builder = SparkSession.builder.appName("personalize-prep")
    if a.master:
        builder = builder.master(a.master)
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    # The driver's copy too may be one shipped with the job.
    driver_binary = executable(a.binary)
    if BAKED_RUN is None:
        subprocess.run([driver_binary, "plan"] + a.plan_args
                       + ["-o", a.run, "--shards", str(a.shards)] + storage, check=True)
    binary, run = a.binary, a.run
    sc.parallelize(range(a.shards), a.shards) \
        .map(lambda shard: run_shard(binary, run, storage, shard)) \
        .collect()

    # Before the session stops: stopping it removes the shipped files.
    commit = [driver_binary, "commit", a.run] + storage
    if a.output:
        commit += ["-o", a.output]
    subprocess.run(commit, check=True)
    spark.stop()


if __name__ == "__main__":
    main()
