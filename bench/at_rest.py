#!/usr/bin/env python3
"""The cost of encryption at rest: the hub's CPU time for one large upload and its download
through OpenSSH's sftp, on a hub that encrypts at rest (the default) and one that does not
(`[at_rest] enabled = false`), side by side in one run.

Both hubs are release builds on loopback, each with its own data folder; the same file of
random bytes (SIZE MiB, 1 GiB by default) is uploaded by alice and downloaded by bob on each,
ROUNDS times, alternating the hubs so that a busy machine weighs on both. It prints the hub's
CPU seconds (user + system, all threads, from /proc/PID/stat) and wall seconds per step, and
the sealed hub's CPU over the plain one's: the target is at most 1.15 (15 % more CPU). The
sftp client's own CPU is not counted. Numbers are for reading, never for passing or failing.
Standard library only.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent  # noqa: E402  (the hub harness of bench/agent)


def log(message):
    print(f"[at-rest bench] {message}", file=sys.stderr, flush=True)


def sftp(hub, user, commands, tmp):
    batch = os.path.join(tmp, f"batch-{user}")
    with open(batch, "w") as f:
        f.write(commands)
    start = time.monotonic()
    agent.run(["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-i", os.path.join(hub.keys, user), "-P", str(hub.sftp),
               "-b", batch, f"{user}@127.0.0.1"], timeout=3600)
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="MiB of the file (default 1024)")
    parser.add_argument("--rounds", type=int, default=2, help="uploads and downloads per hub (default 2)")
    args = parser.parse_args()
    log("cargo build --release -p mailroom")
    agent.run(["cargo", "build", "--release", "-p", "mailroom"], timeout=7200)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(agent.ROOT, "target"))
    binary = os.path.join(target, "release", "mailroom")
    tmp = tempfile.mkdtemp(prefix="mailroom-at-rest-bench-")
    hubs = {}
    try:
        for label in ("sealed", "plain"):
            folder = os.path.join(tmp, label)
            os.makedirs(folder)
            hub = agent.Hub(binary, folder)
            if label == "plain":
                hub.env["MAILROOM_AT_REST_ENABLED"] = "false"
            hub.start()
            hubs[label] = hub
        status = agent.run([binary, "status"], env=hubs["sealed"].env)
        if "at rest:          on" not in status:
            raise SystemExit(f"the sealed hub does not encrypt: {status}")
        source = os.path.join(tmp, "file.bin")
        log(f"writing {args.size} MiB of random bytes")
        agent.run(["dd", "if=/dev/urandom", f"of={source}", "bs=1M", f"count={args.size}", "status=none"])
        figures = {label: {"put_cpu": 0.0, "put_wall": 0.0, "get_cpu": 0.0, "get_wall": 0.0} for label in hubs}
        for round_ in range(args.rounds):
            for label, hub in hubs.items():
                name = f"file-{round_}.bin"
                log(f"round {round_ + 1}: {label}: upload")
                before = agent.cpu_seconds(hub.proc.pid)
                figures[label]["put_wall"] += sftp(hub, "alice", f"put {source} /outbox/bob/{name}\n", tmp)
                figures[label]["put_cpu"] += agent.cpu_seconds(hub.proc.pid) - before
                log(f"round {round_ + 1}: {label}: download")
                back = os.path.join(tmp, "back.bin")
                before = agent.cpu_seconds(hub.proc.pid)
                figures[label]["get_wall"] += sftp(hub, "bob", f"get /inbox/alice/{name} {back}\n", tmp)
                figures[label]["get_cpu"] += agent.cpu_seconds(hub.proc.pid) - before
                if agent.sha256(back) != agent.sha256(source):
                    raise SystemExit(f"{label}: the download differs from the upload")
                os.remove(back)
    finally:
        for hub in hubs.values():
            if getattr(hub, "proc", None) is not None and hub.proc.poll() is None:
                hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    sealed, plain = figures["sealed"], figures["plain"]
    print(f"{args.rounds} x {args.size} MiB each way through sftp; hub CPU seconds (user + system)")
    print(f"{'step':28} {'sealed':>10} {'plain':>10} {'sealed/plain':>14}")
    for step, key in (("upload, hub CPU s", "put_cpu"), ("upload, wall s", "put_wall"),
                      ("download, hub CPU s", "get_cpu"), ("download, wall s", "get_wall")):
        print(f"{step:28} {sealed[key]:10.2f} {plain[key]:10.2f} {sealed[key] / max(plain[key], 1e-9):13.2f}x")
    total = (sealed["put_cpu"] + sealed["get_cpu"]) / max(plain["put_cpu"] + plain["get_cpu"], 1e-9)
    print(f"{'upload + download, hub CPU':28} {'':10} {'':10} {total:13.2f}x   (target: at most 1.15x)")


if __name__ == "__main__":
    main()
