#!/usr/bin/env python3
"""The client agent measured against the clients it replaces, side by side in one run, on
loopback, against one release-built hub:

  - send of BIG MiB of random bytes: `mailroom-agent send` against curl driving the same API
    (POST /uploads, one PATCH with the whole file, POST finish);
  - zstd over the API: the agent sending BIG MiB of CSV lines with compression agreed
    (zstd) and without (none): wall time and the bytes the agent wrote to its socket
    (/proc/PID/io wchar, TLS included);
  - end-to-end encryption: `send --e2e` (zstd, then age to bob's key, into a spool, then the
    upload) against the plain `send` of the same BIG MiB;
  - sync of FILES × 4 KiB: one `mailroom-agent sync` pass over an outbox folder against one
    OpenSSH `sftp -b` session putting the same files into the same hub (target ≥ 1.0×);
  - SSH compression: `sftp -C` (zlib@openssh.com) against plain `sftp` putting, then
    getting, BIG MiB of random (incompressible) bytes (target: compression costs at most 10 % throughput), on the
    hub and on OpenSSH's own sshd side by side (bench.py's private sshd), with the hub's CPU
    seconds for each: what compression costs the server, apart from what it costs the client.

It prints one table with the ratios and writes JSON with --json. Numbers are for reading,
never for passing or failing: a loaded machine moves them. Standard library only.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench as peers  # noqa: E402  (the private sshd of bench/run)


def cpu_seconds(pid):
    """User and system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / peers.CLK_TCK


def log(message):
    print(f"[agent bench] {message}", file=sys.stderr, flush=True)


def run(args, env=None, input=None, timeout=1800):
    done = subprocess.run(args, env=env, input=input, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({done.returncode}): {done.stdout.decode()} {done.stderr.decode()}")
    return done.stdout.decode()


def build():
    log("cargo build --release -p mailroom -p mailroom-agent")
    run(["cargo", "build", "--release", "-p", "mailroom", "-p", "mailroom-agent"], timeout=7200)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "mailroom"), os.path.join(target, "release", "mailroom-agent")


def timed(args, env=None, input=None):
    """Runs `args`; returns (seconds, bytes the process wrote: /proc/PID/io wchar)."""
    start = time.monotonic()
    proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wchar = 0
    if input is not None:
        proc.stdin.write(input)
    proc.stdin.close()
    # wchar is read just before the process is reaped.
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/io") as f:
                wchar = int(re.search(r"wchar: (\d+)", f.read()).group(1))
        except (OSError, AttributeError):
            pass
        time.sleep(0.005)
    out, err = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed: {out.decode()} {err.decode()}")
    return time.monotonic() - start, wchar


class Hub:
    def __init__(self, binary, tmp):
        self.binary = binary
        self.data = os.path.join(tmp, "data")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
        self.env.update(
            MAILROOM_DATA=self.data,
            MAILROOM_LOG="warn",
            MAILROOM_SFTP_LISTEN="127.0.0.1:0",
            MAILROOM_HTTPS_LISTEN="127.0.0.1:0",
            MAILROOM_HTTPS_LOGIN_ATTEMPTS_PER_MINUTE="1000",
            MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS="2",
        )
        self.password = "Bench-" + os.urandom(9).hex()
        self.keys = os.path.join(tmp, "keys")
        os.makedirs(self.keys)
        self.out = os.path.join(tmp, "serve.out")

    def start(self):
        run([self.binary, "init"], env=self.env)
        for name in ("alice", "bob"):
            key = os.path.join(self.keys, name)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
            run([self.binary, "account", "add", name, "--password-stdin", "--authorized-key", key + ".pub"],
                env=self.env, input=(self.password + "\n").encode())
        run([self.binary, "route", "allow", "alice", "bob"], env=self.env)
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=open(self.out, "wb"),
                                     stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        self.sftp = self.https = None
        while time.monotonic() < deadline and not (self.sftp and self.https):
            text = open(self.out).read()
            sftp = re.search(r"sftp listening on 127\.0\.0\.1:(\d+)", text)
            https = re.search(r"https listening on 127\.0\.0\.1:(\d+)", text)
            self.sftp = sftp and int(sftp.group(1))
            self.https = https and int(https.group(1))
            time.sleep(0.05)
        if not (self.sftp and self.https):
            raise SystemExit(f"the hub did not start: {open(self.out).read()}")
        self.url = f"https://localhost:{self.https}"
        self.ca = os.path.join(self.data, "tls", "server-ca.crt")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)

    def token(self):
        body = json.dumps({"username": "alice", "password": self.password})
        out = run(["curl", "-sS", "--fail-with-body", "--cacert", self.ca, "-H", "Content-Type: application/json",
                   "-d", body, f"{self.url}/api/v1/token"])
        return json.loads(out)["access_token"]


def sha256(path):
    return run(["sha256sum", path]).split()[0]


def curl_send(hub, path):
    """curl driving the API: create the upload, PATCH the whole file, finish."""
    token = hub.token()
    auth = ["-H", f"Authorization: Bearer {token}"]
    size = os.path.getsize(path)
    sha = sha256(path)
    start = time.monotonic()
    body = json.dumps({"recipients": ["bob"], "name": "curl-" + os.path.basename(path), "size": size})
    created = run(["curl", "-sS", "--fail-with-body", "--cacert", hub.ca, *auth, "-H", "Content-Type: application/json",
                   "-d", body, f"{hub.url}/api/v1/uploads"])
    upload = json.loads(created)["id"]
    run(["curl", "-sS", "--fail-with-body", "--cacert", hub.ca, *auth, "-X", "PATCH", "-H", "Upload-Offset: 0",
         "-H", "Content-Type: application/offset+octet-stream", "-T", path, f"{hub.url}/api/v1/uploads/{upload}"])
    run(["curl", "-sS", "--fail-with-body", "--cacert", hub.ca, *auth, "-H", "Content-Type: application/json",
         "-d", json.dumps({"sha256": sha}), f"{hub.url}/api/v1/uploads/{upload}/finish"])
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", type=int, default=1024, help="MiB of the large files (default 1024)")
    parser.add_argument("--files", type=int, default=2000, help="4 KiB files of the sync step (default 2000)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    hub_binary, agent_binary = build()
    tmp = tempfile.mkdtemp(prefix="mailroom-agent-bench-")
    hub = Hub(hub_binary, tmp)
    figures = {}
    try:
        hub.start()
        agent_env = dict(os.environ, MAILROOM_AGENT_CONFIG=os.path.join(tmp, "agent"))
        plain_env = dict(os.environ, MAILROOM_AGENT_CONFIG=os.path.join(tmp, "agent-plain"))
        pw = (hub.password + "\n").encode()
        run([agent_binary, "login", hub.url, "--user", "alice", "--password-stdin", "--ca", hub.ca], env=agent_env, input=pw)
        run([agent_binary, "login", hub.url, "--user", "alice", "--password-stdin", "--ca", hub.ca,
             "--compression", "none"], env=plain_env, input=pw)

        log(f"{args.big} MiB of random bytes: agent send vs curl")
        random_file = os.path.join(tmp, "random.bin")
        run(["dd", "if=/dev/urandom", f"of={random_file}", "bs=1M", f"count={args.big}", "status=none"])
        agent_s, _ = timed([agent_binary, "send", "--to", "bob", random_file], env=agent_env)
        curl_s = curl_send(hub, random_file)
        figures["send_random"] = {"agent_s": agent_s, "curl_s": curl_s, "ratio": curl_s / agent_s}

        log(f"{args.big} MiB of random bytes: agent send --e2e vs plain")
        bob_env = dict(os.environ, MAILROOM_AGENT_CONFIG=os.path.join(tmp, "agent-bob"))
        run([agent_binary, "login", hub.url, "--user", "bob", "--password-stdin", "--ca", hub.ca], env=bob_env, input=pw)
        run([agent_binary, "key", "generate"], env=bob_env)
        e2e_s, _ = timed([agent_binary, "send", "--e2e", "--to", "bob", random_file], env=agent_env)
        figures["send_e2e"] = {"e2e_s": e2e_s, "plain_s": agent_s, "overhead": e2e_s / agent_s - 1}
        os.remove(random_file)

        log(f"{args.big} MiB of CSV: agent with zstd vs without")
        csv = os.path.join(tmp, "ledger.csv")
        with open(csv, "w") as f:
            line = 0
            while f.tell() < args.big << 20:
                f.write("".join(f"INV-{n:08};ACME Corp;2026-12-02;EUR;{n * 7 % 99991:>10}.00\n" for n in range(line, line + 10000)))
                line += 10000
        zstd_s, zstd_bytes = timed([agent_binary, "send", "--to", "bob", csv], env=agent_env)
        none_s, none_bytes = timed([agent_binary, "send", "--to", "bob", csv], env=plain_env)
        figures["zstd_csv"] = {"zstd_s": zstd_s, "zstd_wire_bytes": zstd_bytes, "none_s": none_s,
                               "none_wire_bytes": none_bytes, "size": os.path.getsize(csv)}
        os.remove(csv)

        log(f"{args.files} × 4 KiB: agent sync vs sftp -b put")
        outbox = os.path.join(tmp, "outbox")
        small = os.path.join(outbox, "bob")
        os.makedirs(small)
        sftp_dir = os.path.join(tmp, "sftp-small")
        os.makedirs(sftp_dir)
        for i in range(args.files):
            data = os.urandom(4096)
            with open(os.path.join(small, f"a{i:05d}.dat"), "wb") as f:
                f.write(data)
            with open(os.path.join(sftp_dir, f"s{i:05d}.dat"), "wb") as f:
                f.write(data)
        sync_s, _ = timed([agent_binary, "sync", "--outbox", outbox], env=agent_env)
        batch = os.path.join(tmp, "batch")
        with open(batch, "w") as f:
            f.write(f"lcd {sftp_dir}\ncd /outbox/bob\nput *\n")
        sftp_s, _ = timed(["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                           "-o", "BatchMode=yes", "-i", os.path.join(hub.keys, "alice"), "-P", str(hub.sftp),
                           "-b", batch, "alice@127.0.0.1"])
        figures["sync_small"] = {"files": args.files, "agent_s": sync_s, "sftp_s": sftp_s, "ratio": sftp_s / sync_s}

        log(f"{args.big} MiB of random bytes over sftp: -C against none")
        random_file = os.path.join(tmp, "random-ssh.bin")
        run(["dd", "if=/dev/urandom", f"of={random_file}", "bs=1M", f"count={args.big}", "status=none"])
        times, cpu = {}, {}
        for label, extra in (("plain", []), ("compressed", ["-C"])):
            batch = os.path.join(tmp, f"batch-{label}")
            with open(batch, "w") as f:
                f.write(f"put {random_file} /outbox/bob/{label}.bin\n")
            before = cpu_seconds(hub.proc.pid)
            times[label], _ = timed(["sftp", "-q", *extra, "-o", "StrictHostKeyChecking=no",
                                     "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                                     "-i", os.path.join(hub.keys, "alice"), "-P", str(hub.sftp),
                                     "-b", batch, "alice@127.0.0.1"])
            cpu[label] = cpu_seconds(hub.proc.pid) - before
        log(f"{args.big} MiB of random bytes from the hub over sftp (the hub compresses): -C against none")
        down, down_cpu = {}, {}
        for label, extra in (("plain", []), ("compressed", ["-C"])):
            batch = os.path.join(tmp, f"batch-get-{label}")
            with open(batch, "w") as f:
                f.write(f"get /inbox/alice/{label}.bin /dev/null\n")
            before = cpu_seconds(hub.proc.pid)
            down[label], _ = timed(["sftp", "-q", *extra, "-o", "StrictHostKeyChecking=no",
                                    "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                                    "-i", os.path.join(hub.keys, "bob"), "-P", str(hub.sftp),
                                    "-b", batch, "bob@127.0.0.1"])
            down_cpu[label] = cpu_seconds(hub.proc.pid) - before
        log(f"{args.big} MiB of random bytes to OpenSSH's sshd: -C against none")
        sshd = peers.OpenSSH(tmp, os.path.join(hub.keys, "alice"), os.path.join(hub.keys, "bob"))
        sshd_times, sshd_down = {}, {}
        try:
            sshd.start()
            for label, extra in (("plain", []), ("compressed", ["-C"])):
                batch = os.path.join(tmp, f"batch-sshd-{label}")
                with open(batch, "w") as f:
                    f.write(f"put {random_file} {sshd.target}/{label}.bin\n")
                sshd_times[label], _ = timed(["sftp", "-q", *extra, "-o", "StrictHostKeyChecking=no",
                                              "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                                              "-i", sshd.up_key, "-P", str(sshd.port), "-b", batch,
                                              f"{sshd.up_user}@127.0.0.1"])
            for label, extra in (("plain", []), ("compressed", ["-C"])):
                batch = os.path.join(tmp, f"batch-sshd-get-{label}")
                with open(batch, "w") as f:
                    f.write(f"get {sshd.target}/{label}.bin /dev/null\n")
                sshd_down[label], _ = timed(["sftp", "-q", *extra, "-o", "StrictHostKeyChecking=no",
                                             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                                             "-i", sshd.up_key, "-P", str(sshd.port), "-b", batch,
                                             f"{sshd.up_user}@127.0.0.1"])
        finally:
            if sshd.proc is not None:
                peers.kill_group(sshd.proc)
        os.remove(random_file)
        figures["ssh_compression"] = {"plain_s": times["plain"], "compressed_s": times["compressed"],
                                      "ratio": times["plain"] / times["compressed"],
                                      "hub_cpu_plain_s": cpu["plain"], "hub_cpu_compressed_s": cpu["compressed"],
                                      "sshd_plain_s": sshd_times["plain"], "sshd_compressed_s": sshd_times["compressed"],
                                      "get_plain_s": down["plain"], "get_compressed_s": down["compressed"],
                                      "get_hub_cpu_plain_s": down_cpu["plain"],
                                      "get_hub_cpu_compressed_s": down_cpu["compressed"],
                                      "sshd_get_plain_s": sshd_down["plain"],
                                      "sshd_get_compressed_s": sshd_down["compressed"]}
    finally:
        hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    mib = args.big
    s, z, y, c = figures["send_random"], figures["zstd_csv"], figures["sync_small"], figures["ssh_compression"]
    e = figures["send_e2e"]
    print(f"{'step':44} {'agent':>12} {'peer':>12} {'ratio':>8}")
    print(f"{f'send {mib} MiB random (MiB/s; peer curl)':44} {mib / s['agent_s']:12.1f} {mib / s['curl_s']:12.1f} {s['ratio']:7.2f}x")
    print(f"{f'send {mib} MiB random, --e2e vs plain (s)':44} {e['e2e_s']:12.2f} {e['plain_s']:12.2f} {e['plain_s'] / e['e2e_s']:7.2f}x")
    print(f"{f'send {mib} MiB CSV, zstd vs none (s)':44} {z['zstd_s']:12.2f} {z['none_s']:12.2f} {z['none_s'] / z['zstd_s']:7.2f}x")
    print(f"{'  bytes written to the socket (MiB)':44} {z['zstd_wire_bytes'] / 2**20:12.1f} {z['none_wire_bytes'] / 2**20:12.1f} {z['none_wire_bytes'] / max(z['zstd_wire_bytes'], 1):7.2f}x")
    files = y["files"]
    print(f"{f'sync {files} x 4 KiB (files/s; peer sftp -b)':44} {files / y['agent_s']:12.1f} {files / y['sftp_s']:12.1f} {y['ratio']:7.2f}x")
    print(f"{f'sftp put {mib} MiB random, -C vs none (MiB/s)':44} {mib / c['compressed_s']:12.1f} {mib / c['plain_s']:12.1f} {c['ratio']:7.2f}x")
    print(f"{'  the same to OpenSSH sshd (MiB/s)':44} {mib / c['sshd_compressed_s']:12.1f} {mib / c['sshd_plain_s']:12.1f} {c['sshd_plain_s'] / c['sshd_compressed_s']:7.2f}x")
    print(f"{'  hub CPU seconds, -C vs none':44} {c['hub_cpu_compressed_s']:12.2f} {c['hub_cpu_plain_s']:12.2f} {c['hub_cpu_plain_s'] / max(c['hub_cpu_compressed_s'], 1e-9):7.2f}x")
    print(f"{f'sftp get {mib} MiB random, -C vs none (MiB/s)':44} {mib / c['get_compressed_s']:12.1f} {mib / c['get_plain_s']:12.1f} {c['get_plain_s'] / c['get_compressed_s']:7.2f}x")
    print(f"{'  the same from OpenSSH sshd (MiB/s)':44} {mib / c['sshd_get_compressed_s']:12.1f} {mib / c['sshd_get_plain_s']:12.1f} {c['sshd_get_plain_s'] / c['sshd_get_compressed_s']:7.2f}x")
    print(f"{'  hub CPU seconds, -C vs none':44} {c['get_hub_cpu_compressed_s']:12.2f} {c['get_hub_cpu_plain_s']:12.2f} {c['get_hub_cpu_plain_s'] / max(c['get_hub_cpu_compressed_s'], 1e-9):7.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
