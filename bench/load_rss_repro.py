#!/usr/bin/env python3
"""Minimal reproduction of the hub's RSS after failed password logins (docs/reliability.md,
"Load"): a fresh hub, then ROUNDS rounds of PER_ROUND wrong passwords (8 at a time, from
127.0.0.2 … 127.0.0.9, bans and startup drops turned off so that every attempt costs one
Argon2 verification), printing the hub's VmRSS 3 s after each round.

    .venv-test/bin/python bench/load_rss_repro.py target/release/mailroom 3 80
    MALLOC_MMAP_THRESHOLD_=1048576 .venv-test/bin/python bench/load_rss_repro.py target/release/mailroom 3 80

The environment reaches the hub, so glibc's malloc tunables can be compared. Needs paramiko.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import paramiko


def main():
    binary, rounds, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tmp = tempfile.mkdtemp(prefix="mailroom-rss-repro-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    env.update(MAILROOM_DATA=os.path.join(tmp, "data"), MAILROOM_LOG="warn",
               MAILROOM_SFTP_LISTEN="127.0.0.1:0", MAILROOM_HTTPS_LISTEN="127.0.0.1:0",
               MAILROOM_AUTH_SAFE_NETWORKS="[]", MAILROOM_AUTH_BAN_THRESHOLD="1000000",
               MAILROOM_SFTP_MAX_STARTUPS="100:30:200")
    subprocess.run([binary, "init"], env=env, check=True, capture_output=True)
    subprocess.run([binary, "account", "add", "target", "--password-stdin"], env=env, check=True,
                   input=b"Right-password-123\n", capture_output=True)
    out = os.path.join(tmp, "serve.out")
    hub = subprocess.Popen([binary, "serve"], env=env, stdout=open(out, "wb"), stderr=subprocess.DEVNULL)
    try:
        while not (m := re.search(r"sftp listening on 127\.0\.0\.1:(\d+)", open(out).read())):
            time.sleep(0.05)
        port = int(m.group(1))

        def rss():
            with open(f"/proc/{hub.pid}/status") as f:
                return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) // 1024

        errors = []

        def attempt(k):
            try:
                sock = socket.create_connection(("127.0.0.1", port), source_address=(f"127.0.0.{2 + k}", 0))
                transport = paramiko.Transport(sock)
                transport.start_client()
                try:
                    transport.auth_password("target", "wrong")
                except paramiko.AuthenticationException:
                    pass
                transport.close()
            except Exception as exc:
                errors.append(exc)

        time.sleep(1)
        print(f"baseline: {rss()} MiB", flush=True)
        for r in range(rounds):
            threads = [threading.Thread(target=lambda k=k: [attempt(k) for _ in range(per // 8)]) for k in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(3)
            print(f"after {(r + 1) * (per // 8) * 8} wrong passwords ({len(errors)} failed attempts): {rss()} MiB",
                  flush=True)
    finally:
        hub.terminate()
        hub.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
