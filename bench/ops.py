#!/usr/bin/env python3
"""Backup, restore and fsck throughput, each beside the plain tool that does the same work.

One release-built hub on loopback, filled through OpenSSH's sftp with FILES files of SIZE
MiB (random bytes, so each is a blob file) and SMALL files of 4 KiB (kept inline), then:

  - `mailroom backup` while the hub serves, onto the same file system (blobs hard-linked),
    against `cp -al` of the blob folder;
  - `mailroom backup` onto another file system (/dev/shm: every blob copied and hashed),
    against `cp -a` of the data folder to the same place;
  - `mailroom fsck` (every blob read and hashed, the chain verified) against `sha256sum` of
    every blob file;
  - `mailroom restore` of the copied backup (every blob copied and hashed), against `cp -a`.

It prints MB/s for each and the ratio to its peer. Numbers are for reading, never for
passing or failing: a loaded machine moves them. Standard library only.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent  # noqa: E402  (the hub harness of bench/agent)


def log(message):
    print(f"[ops bench] {message}", file=sys.stderr, flush=True)


def timed(args, env=None):
    start = time.monotonic()
    done = subprocess.run(args, env=env, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed: {done.stdout.decode()} {done.stderr.decode()}")
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=16, help="large files (default 16)")
    parser.add_argument("--size", type=int, default=64, help="MiB each (default 64: 1 GiB in all)")
    parser.add_argument("--small", type=int, default=500, help="4 KiB files (default 500)")
    args = parser.parse_args()
    log("cargo build --release -p mailroom")
    agent.run(["cargo", "build", "--release", "-p", "mailroom"], timeout=7200)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(agent.ROOT, "target"))
    binary = os.path.join(target, "release", "mailroom")
    tmp = tempfile.mkdtemp(prefix="mailroom-ops-bench-")
    shm = tempfile.mkdtemp(prefix="mailroom-ops-bench-", dir="/dev/shm")
    hub = agent.Hub(binary, tmp)
    rows = []
    try:
        hub.start()
        log(f"filling the hub: {args.files} x {args.size} MiB and {args.small} x 4 KiB through sftp")
        source = os.path.join(tmp, "source")
        os.makedirs(source)
        for i in range(args.files):
            agent.run(["dd", "if=/dev/urandom", f"of={source}/big-{i:03d}.bin", "bs=1M",
                       f"count={args.size}", "status=none"])
        for i in range(args.small):
            with open(f"{source}/small-{i:05d}.txt", "wb") as f:
                f.write(os.urandom(4096))
        batch = os.path.join(tmp, "batch")
        with open(batch, "w") as f:
            f.write(f"lcd {source}\ncd /outbox/bob\nput *\n")
        agent.run(["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                   "-o", "BatchMode=yes", "-i", os.path.join(hub.keys, "alice"), "-P", str(hub.sftp),
                   "-b", batch, "alice@127.0.0.1"])
        shutil.rmtree(source)
        blobs = [p for p in glob.glob(os.path.join(hub.data, "blobs", "objects", "*", "*")) if os.path.isfile(p)]
        megabytes = sum(os.path.getsize(p) for p in blobs) / 1e6
        env = hub.env

        log("backup onto the same file system (hard links) against cp -al")
        linked = timed([binary, "backup", os.path.join(tmp, "backup-linked")], env=env)
        cp_al = timed(["cp", "-al", os.path.join(hub.data, "blobs"), os.path.join(tmp, "cp-al")])
        rows.append(("backup, hard-linked (peer: cp -al)", linked, cp_al))

        log("backup onto /dev/shm (copied and hashed) against cp -a")
        copied_dir = os.path.join(shm, "backup-copied")
        copied = timed([binary, "backup", copied_dir], env=env)
        cp_a = timed(["cp", "-a", os.path.join(hub.data, "blobs"), os.path.join(shm, "cp-a")])
        shutil.rmtree(os.path.join(shm, "cp-a"))
        rows.append(("backup, copied (peer: cp -a)", copied, cp_a))

        log("fsck against sha256sum of every blob")
        agent.run(["sync"])
        fsck = timed([binary, "fsck"], env=env)
        sums = timed(["sha256sum", *blobs])
        rows.append(("fsck (peer: sha256sum)", fsck, sums))

        hub.stop()
        log("restore from /dev/shm against cp -a")
        restore_env = dict(env, MAILROOM_DATA=os.path.join(tmp, "restored"))
        restored = timed([binary, "restore", copied_dir], env=restore_env)
        cp_back = timed(["cp", "-a", copied_dir, os.path.join(tmp, "cp-back")])
        rows.append(("restore, copied and hashed (peer: cp -a)", restored, cp_back))
    finally:
        if getattr(hub, "proc", None) is not None and hub.proc.poll() is None:
            hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)

    print(f"{'step':44} {'mailroom MB/s':>14} {'peer MB/s':>12} {'ratio':>8}")
    for label, ours, peer in rows:
        print(f"{label:44} {megabytes / ours:14.0f} {megabytes / peer:12.0f} {peer / ours:7.2f}x")
    print(f"({megabytes:.0f} MB in {args.files} blob files, and {args.small} inline files)")


if __name__ == "__main__":
    main()
