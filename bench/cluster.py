#!/usr/bin/env python3
"""The cluster bench: Mailroom on its embedded engines (SQLite, blobs/) beside 1, 2 and 3
nodes on the shared cluster engines (PostgreSQL, an S3 server), in one run, on loopback.

bench/cluster starts the throwaway engines (scripts/services) and runs this. For each
layout it measures:
  - the aggregate rate of 4 KiB uploads: SESSIONS paramiko sessions (each its own process,
    so no GIL is shared), spread round robin over the nodes, each uploading FILES files
    (open, write, close: the hub commits each before the close returns);
  - the aggregate throughput of large uploads: one OpenSSH `sftp` put of BIG MiB per node,
    all at once;
  - PostgreSQL round trips per file operation: the nodes' own count (kill -USR1 logs it)
    over the 4 KiB step, divided by the file operations the hubs counted.
It prints one table and the ratios to the embedded layout, and writes JSON with --json.
Numbers are for reading, never for passing or failing: a loaded machine moves them.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor

import paramiko

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, env, input=None, timeout=300):
    done = subprocess.run(args, env=env, input=input, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stdout.decode()} {done.stderr.decode()}")
    return done.stdout.decode()


def psql(url, sql):
    return run(["psql", url, "-v", "ON_ERROR_STOP=1", "-tAc", sql], os.environ.copy()).strip()


class Layout:
    """Nodes on one set of engines: `nodes` 0 means the embedded engines (one process)."""

    def __init__(self, binary, tmp, nodes):
        self.binary = binary
        self.nodes = nodes
        self.label = "embedded" if nodes == 0 else f"{nodes} node{'s' if nodes > 1 else ''}"
        self.dir = os.path.join(tmp, self.label.replace(" ", "-"))
        os.makedirs(self.dir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
        self.env.update(
            MAILROOM_LOG="warn,mailroom::stats=info",
            MAILROOM_SFTP_LISTEN="127.0.0.1:0",
            MAILROOM_HTTPS_ENABLED="false",
            MAILROOM_SFTP_MAX_CONNECTIONS_PER_ADDRESS="1000",
            MAILROOM_SFTP_MAX_CONNECTIONS="2000",
            MAILROOM_SFTP_MAX_STARTUPS="1000:30:1000",
            MAILROOM_SFTP_MAX_STARTUPS_PER_ADDRESS="1000",
            MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS="2",
        )
        if nodes:
            self.database = f"mr_bench_{uuid.uuid4().hex}"
            admin_url = os.environ["MAILROOM_TEST_PG_URL"]
            psql(admin_url, f"CREATE DATABASE {self.database}")
            self.env.update(
                MAILROOM_META_URL=admin_url.rsplit("/", 1)[0] + "/" + self.database,
                MAILROOM_BLOB_URL=os.environ["MAILROOM_TEST_S3_URL"] + "/" + uuid.uuid4().hex,
                MAILROOM_BLOB_ENDPOINT=os.environ["MAILROOM_TEST_S3_ENDPOINT"],
                MAILROOM_BLOB_REGION="us-east-1",
                MAILROOM_BLOB_ACCESS_KEY_ID=os.environ["MAILROOM_TEST_S3_KEY"],
                MAILROOM_BLOB_SECRET_ACCESS_KEY_FILE="s3-secret",
                MAILROOM_BLOB_ALLOW_HTTP="true",
            )
        self.procs = []
        self.ports = []
        self.logs = []
        self.key = os.path.join(self.dir, "alice")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key], self.env)

    def node_env(self, index):
        env = dict(self.env)
        data = os.path.join(self.dir, f"node{index}")
        env["MAILROOM_DATA"] = data
        if self.nodes:
            os.makedirs(data, exist_ok=True)
            with open(os.path.join(data, "s3-secret"), "w") as f:
                f.write(os.environ["MAILROOM_TEST_S3_SECRET"])
        return env

    def start(self):
        for index in range(max(self.nodes, 1)):
            env = self.node_env(index)
            run([self.binary, "init"], env)
            if index == 0:
                run([self.binary, "account", "add", "alice", "--authorized-key", self.key + ".pub"], env)
                run([self.binary, "account", "add", "bob"], env)
                run([self.binary, "route", "allow", "alice", "bob"], env)
            log = os.path.join(self.dir, f"node{index}.log")
            self.logs.append(log)
            proc = subprocess.Popen(
                [self.binary, "serve"], env=env, stdout=subprocess.PIPE,
                stderr=open(log, "w"), start_new_session=True,
            )
            self.procs.append(proc)
            for line in proc.stdout:
                found = re.match(rb"mailroom: sftp listening on 127\.0\.0\.1:(\d+)", line)
                if found:
                    self.ports.append(int(found.group(1)))
                    break
            else:
                raise SystemExit(f"node {index} did not start; see {log}")

    def counters(self):
        """Each node's store counters (kill -USR1), summed."""
        total = {}
        for proc, log in zip(self.procs, self.logs):
            start = os.path.getsize(log)
            os.kill(proc.pid, signal.SIGUSR1)
            deadline = time.monotonic() + 10
            values = None
            while values is None:
                with open(log, "rb") as f:
                    f.seek(start)
                    for line in f.read().decode(errors="replace").splitlines():
                        if "store statistics" in line:
                            values = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
                if values is None:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"no store statistics after SIGUSR1; see {log}")
                    time.sleep(0.01)
            for key, value in values.items():
                total[key] = total.get(key, 0) + value
        return total

    def stop(self):
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait(timeout=60)
        if self.nodes:
            psql(os.environ["MAILROOM_TEST_PG_URL"], f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")


def small_session(port, key, files, tag):
    """One session's 4 KiB uploads; returns when its first and last close returned."""
    sock_transport = paramiko.Transport(("127.0.0.1", port))
    sock_transport.start_client(timeout=60)
    sock_transport.auth_publickey("alice", paramiko.Ed25519Key.from_private_key_file(key))
    sftp = paramiko.SFTPClient.from_transport(sock_transport)
    data = os.urandom(4096)
    start = time.monotonic()
    for i in range(files):
        with sftp.open(f"/outbox/bob/{tag}-{i}.dat", "wb") as f:
            f.write(data)
    end = time.monotonic()
    sock_transport.close()
    return start, end


def measure_small(layout, sessions, files):
    before = layout.counters()
    with ProcessPoolExecutor(max_workers=sessions) as pool:
        jobs = [
            pool.submit(small_session, layout.ports[i % len(layout.ports)], layout.key, files, f"s{i}")
            for i in range(sessions)
        ]
        spans = [job.result() for job in jobs]
    after = layout.counters()
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    ops = after.get("file_operations", 0) - before.get("file_operations", 0)
    trips = after.get("round_trips", 0) - before.get("round_trips", 0)
    return sessions * files / elapsed, (trips / ops if ops else float("nan"))


def measure_big(layout, mib, tmp):
    source = os.path.join(tmp, "big.bin")
    if not os.path.exists(source) or os.path.getsize(source) != mib << 20:
        with open(source, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
    procs = []
    start = time.monotonic()
    for index, port in enumerate(layout.ports):
        batch = os.path.join(layout.dir, f"big-{index}.batch")
        with open(batch, "w") as f:
            f.write(f"put {source} /outbox/bob/big-{index}.bin\n")
        procs.append(subprocess.Popen(
            ["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "BatchMode=yes", "-i", layout.key, "-P", str(port), "-b", batch, "alice@127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ))
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"sftp put failed: {err.decode()}")
    elapsed = time.monotonic() - start
    return len(layout.ports) * mib / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--nodes", default="1,2,3", help="cluster sizes to measure (default 1,2,3)")
    parser.add_argument("--sessions", type=int, default=12, help="parallel sessions of 4 KiB uploads")
    parser.add_argument("--files", type=int, default=200, help="4 KiB files per session")
    parser.add_argument("--big-mib", type=int, default=1024, help="MiB of each node's large upload")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the harness works")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.files, args.big_mib = 2, 10, 8
    for name in ("MAILROOM_TEST_PG_URL", "MAILROOM_TEST_S3_URL"):
        if name not in os.environ:
            raise SystemExit(f"{name} is not set: run bench/cluster, which starts the engines")
    layouts = [0] + [int(n) for n in args.nodes.split(",")]
    results = []
    tmp = tempfile.mkdtemp(prefix="mailroom-cluster-bench.")
    try:
        for nodes in layouts:
            layout = Layout(args.binary, tmp, nodes)
            layout.start()
            try:
                rate, trips = measure_small(layout, args.sessions, args.files)
                throughput = measure_big(layout, args.big_mib, tmp)
            finally:
                layout.stop()
            results.append({"layout": layout.label, "nodes": nodes, "small_files_per_s": rate,
                            "big_mib_per_s": throughput, "pg_round_trips_per_op": trips})
            print(f"  {layout.label:9} {rate:8.0f} files/s   {throughput:7.1f} MiB/s"
                  + (f"   {trips:5.2f} PostgreSQL round trips per file operation" if nodes else ""),
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = results[0]
    print(f"\n4 KiB uploads ({args.sessions} sessions x {args.files} files) and {args.big_mib} MiB"
          " uploads (one per node, at once), aggregate; ratio to the embedded engines:")
    print(f"  {'layout':9} {'files/s':>8} {'ratio':>6} {'MiB/s':>8} {'ratio':>6} {'RT/op':>6}")
    for r in results:
        trips = f"{r['pg_round_trips_per_op']:6.2f}" if r["nodes"] else "     -"
        print(f"  {r['layout']:9} {r['small_files_per_s']:8.0f} {r['small_files_per_s'] / base['small_files_per_s']:6.2f}"
              f" {r['big_mib_per_s']:8.1f} {r['big_mib_per_s'] / base['big_mib_per_s']:6.2f} {trips}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sessions": args.sessions, "files": args.files, "big_mib": args.big_mib,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
