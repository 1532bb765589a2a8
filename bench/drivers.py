#!/usr/bin/env python3
"""paramiko drivers for bench/run: the many-sessions and latency measurements.

bench/bench.py runs each subcommand as its own process (so that its Python threads never
share a GIL with the harness or with each other) and talks to it over stdin/stdout, one line
per message. Times are `time.monotonic()`, which on Linux is CLOCK_MONOTONIC and therefore
comparable between processes.

Subcommands (common arguments: HOST PORT USER KEY):
  idle N        open N authenticated SFTP sessions (each does one request so that the
                subsystem is really running), print "ready N", wait for a line on stdin,
                close them, print "closed".
  poll DIR SIZE list DIR in a tight loop; every entry of SIZE bytes not seen before is
                reported as "seen NAME T" (T = when the listing that showed it returned)
                and then removed (acknowledged) so the listing stays short. Prints
                "ready" once the first listing returned; stops at EOF on stdin.
  send DIR N SIZE  for i in 0..N: read a line on stdin (the go-ahead), upload DIR/lat-i.dat
                (SIZE bytes, one open/write/close), print "closed NAME T" with T = when the
                close returned. Prints "ready" after login.
"""
import os
import select
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import paramiko


def connect(host, port, user, key_file):
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = 60
    transport.auth_timeout = 60
    # The same algorithms with both servers (bench.py's KEX and default cipher).
    options = transport.get_security_options()
    options.kex = ("curve25519-sha256@libssh.org",)
    options.ciphers = ("aes128-gcm@openssh.com",)
    transport.start_client(timeout=60)
    key = paramiko.Ed25519Key.from_private_key_file(key_file)
    transport.auth_publickey(user, key)
    if not transport.is_authenticated():
        raise RuntimeError("authentication failed")
    sftp = paramiko.SFTPClient.from_transport(transport)
    return transport, sftp


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cmd_idle(host, port, user, key, count):
    count = int(count)

    def one(_):
        transport, sftp = connect(host, port, user, key)
        sftp.normalize(".")
        return transport, sftp

    # A few logins at a time: both servers see the same gentle ramp.
    with ThreadPoolExecutor(max_workers=8) as pool:
        sessions = list(pool.map(one, range(count)))
    say(f"ready {len(sessions)}")
    sys.stdin.readline()
    for transport, sftp in sessions:
        try:
            sftp.close()
        finally:
            transport.close()
    say("closed")


def cmd_poll(host, port, user, key, directory, size):
    size = int(size)
    transport, sftp = connect(host, port, user, key)
    seen = set()
    sftp.listdir_attr(directory)
    say("ready")
    stdin = sys.stdin.fileno()
    while True:
        if select.select([stdin], [], [], 0)[0] and not os.read(stdin, 4096):
            break
        entries = sftp.listdir_attr(directory)
        now = time.monotonic()
        for entry in entries:
            if entry.filename in seen or entry.st_size != size:
                continue
            seen.add(entry.filename)
            say(f"seen {entry.filename} {now:.6f}")
            sftp.remove(f"{directory}/{entry.filename}")
    sftp.close()
    transport.close()


def cmd_send(host, port, user, key, directory, count, size):
    count, size = int(count), int(size)
    data = os.urandom(size)
    transport, sftp = connect(host, port, user, key)
    say("ready")
    for i in range(count):
        if not sys.stdin.readline():
            break
        name = f"lat-{i:05d}.dat"
        handle = sftp.open(f"{directory}/{name}", "wb")
        handle.write(data)
        handle.close()
        say(f"closed {name} {time.monotonic():.6f}")
    sftp.close()
    transport.close()


def main():
    command, args = sys.argv[1], sys.argv[2:]
    commands = {"idle": cmd_idle, "poll": cmd_poll, "send": cmd_send}
    try:
        commands[command](*args)
    except Exception as exc:  # the harness shows this and fails the measurement
        say(f"error {type(exc).__name__}: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    threading.current_thread().name = "driver"
    main()
