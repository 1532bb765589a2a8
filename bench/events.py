#!/usr/bin/env python3
"""Events that act, measured: what rules cost a transfer, and how fast the queue drains.

Two fresh Mailroom hubs side by side in one run, the same build and settings, one without
rules and one whose two rules make an e-mail job and a webhook job of every delivery. The
sinks are real and on loopback: aiosmtpd (the SMTP server the tests use) and an HTTPS
receiver in this process (Python's http.server on the ruled hub's own server certificate,
answering 204), both at nice 10: they stand in for receivers on other machines, so on this
shared two-core VM they take spare CPU only. Each round uploads --files × 4 KiB in one
OpenSSH sftp session to each hub,
alternating which goes first, then waits for the ruled hub's queue to drain.

A third hub checks every upload with a clamd of the bench's own (a one-signature database
written here) before delivery: the scan cost per file (wall time per check, the hub's CPU and
clamd's) and the time from upload to delivery while a file is held for its check.

Figures: upload rate with rules over without (target ≥ 0.9×); the hub's CPU per file,
with rules counted once the file's jobs are done; jobs done per second (from
the first job queued to the last one done); the time from an event to its job being done
(for e-mail: the SMTP server's acceptance, since a job is done only after it), p50 and p99,
at a steady 50 uploads/s (target p99 < 1 s) and in the bursts. Timed tests never fail on these numbers; the harness fails only when
it breaks. Standard library only, plus bench.py's helpers.
"""

import argparse
import datetime
import http.server
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the helpers of the main harness)
from bench import SMALL, BenchError, Client, Driver, Mailroom, build, keygen, log, make_small_dir, percentile  # noqa: E402


# The sinks stand in for receivers on other machines: on this shared two-core VM they run at
# nice 10, so that they take spare CPU only (as the hub's own job threads do, `[jobs] nice`)
# instead of the cores the uploads being measured need.
SINK_NICE = 10
_niced = threading.local()


def nice_this_thread():
    """Lowers the calling thread alone (Linux applies a thread's niceness to it only)."""
    if not getattr(_niced, "done", False):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SINK_NICE)
        _niced.done = True


class Receiver(http.server.BaseHTTPRequestHandler):
    """Accepts every signed POST (the bench measures the hub, not a receiver's checks), over
    kept-alive connections as a production receiver would."""

    protocol_version = "HTTP/1.1"

    received = 0
    lock = threading.Lock()

    def do_POST(self):
        nice_this_thread()
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        if not self.headers.get("webhook-signature", "").startswith("v1,"):
            self.send_response(400)
        else:
            with Receiver.lock:
                Receiver.received += 1
            self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args):
        pass


def https_receiver(cert, key):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)

    def serve():
        nice_this_thread()
        server.serve_forever()

    threading.Thread(target=serve, daemon=True).start()
    return server


def smtp_sink(python, port, maildir):
    proc = bench.spawn(
        [python, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Mailbox", maildir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: os.nice(SINK_NICE),
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("aiosmtpd did not start (is it installed in the bench's Python?)")
            time.sleep(0.05)


class RuledMailroom(Mailroom):
    """A Mailroom whose configuration gains the bench's rules before it serves."""

    label = "Mailroom+rules"

    def __init__(self, binary, tmp, smtp_port, receiver_port_box):
        super().__init__(binary, tmp)
        self.smtp_port = smtp_port
        self.receiver_port_box = receiver_port_box

    def configure(self):
        cert = os.path.join(self.data, "tls", "server.crt")
        key = os.path.join(self.data, "tls", "server.key")
        receiver = https_receiver(cert, key)
        self.receiver_port_box.append(receiver)
        port = receiver.server_address[1]
        path = os.path.join(self.data, "mailroom.toml")
        with open(path) as f:
            config = f.read()
        config = config.replace(
            "\n[webhooks]\n",
            '\n[webhooks]\nca_file = "tls/server-ca.crt"\nallow_networks = ["127.0.0.0/8"]\n',
        ).replace(
            "\n[smtp]\n",
            f'\n[smtp]\nserver = "127.0.0.1:{self.smtp_port}"\nsecurity = "none"\nfrom = "mailroom@example.test"\n',
        )
        config += f"""
[[rules]]
name = "mail-every-delivery"
on = ["delivery.delivered"]
email = ["ops@example.test"]

[[rules]]
name = "hook-every-delivery"
on = ["delivery.delivered"]
webhook = ["https://127.0.0.1:{port}/mailroom"]
"""
        with open(path, "w") as f:
            f.write(config)


class CheckedMailroom(Mailroom):
    """A Mailroom that checks every upload with a clamd of the bench's own before delivery."""

    label = "Mailroom+check"

    def __init__(self, binary, tmp, clamd_port):
        super().__init__(binary, tmp)
        self.clamd_port = clamd_port
        # The scan's own cost: checks start at once, not after a burst ([jobs] max_yield_ms;
        # by default a check, like every job, waits up to 3 s for a burst of uploads to end).
        self.env["MAILROOM_JOBS_MAX_YIELD_MS"] = "0"

    def configure(self):
        path = os.path.join(self.data, "mailroom.toml")
        with open(path) as f:
            config = f.read()
        config = config.replace("\n[check]\n", f'\n[check]\nclamd = "tcp://127.0.0.1:{self.clamd_port}"\n')
        with open(path, "w") as f:
            f.write(config)


def clamd_binary():
    for candidate in ("/usr/sbin/clamd", shutil.which("clamd") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError("clamd is not installed (apt-get install clamav-daemon; .ci/run does)")


def start_clamd(tmp):
    """clamd on loopback with a one-signature database written here (no download): a body
    signature of the bench's own, so every file is really scanned and none is found."""
    base = os.path.join(tmp, "clamd")
    db = os.path.join(base, "db")
    os.makedirs(db)
    marker = b"MAILROOM-BENCH-NEVER-PRESENT-MARKER"
    with open(os.path.join(db, "bench.ndb"), "w") as f:
        f.write(f"Mailroom-Bench-Marker:0:*:{marker.hex()}\n")
    port = bench.free_port()
    conf = os.path.join(base, "clamd.conf")
    with open(conf, "w") as f:
        f.write(
            f"Foreground yes\nDatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr 127.0.0.1\n"
            f"LogFile {os.path.join(base, 'clamd.log')}\nPidFile {os.path.join(base, 'clamd.pid')}\n"
        )
    proc = bench.spawn([clamd_binary(), "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"zPING\0")
                if s.recv(16).startswith(b"PONG"):
                    return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError("clamd did not start")
        time.sleep(0.05)


def cpu_ticks(pid):
    _, utime, stime, _, _ = bench.proc_stat(pid)
    return utime + stime


def jobs(server):
    _, out, _ = bench.run([server.binary, "--json", "jobs", "list", "--limit", "1000000"], env=server.env, timeout=120)
    return json.loads(out)


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round: proves the harness works (CI)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--files", type=int, default=1000, help="4 KiB files per round and hub (default 1000)")
    p.add_argument("--no-build", action="store_true", help="use target/release/mailroom as it is")
    p.add_argument("--debug-build", action="store_true", help="measure the debug build (only to prove the harness works)")
    p.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE")
    a = p.parse_args()
    if a.quick:
        a.rounds, a.files = 1, 20
    return a


def main():
    a = parse_args()
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        raise BenchError("aiosmtpd is not installed in this Python (bench/events installs it)")
    if a.no_build:
        binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(bench.ROOT, "target")), "release", "mailroom")
    else:
        binary = build("dev" if a.debug_build else "release")
    tmp = tempfile.mkdtemp(prefix="mailroom-bench-events-")
    ok = False
    receivers = []
    try:
        os.makedirs(os.path.join(tmp, "keys"))
        keygen(os.path.join(tmp, "keys", "alice"), "alice")
        keygen(os.path.join(tmp, "keys", "bob"), "bob")
        smtp_port = bench.free_port()
        maildir = os.path.join(tmp, "maildir")
        smtp_sink(sys.executable, smtp_port, maildir)
        plain = Mailroom(binary, os.path.join(tmp, "plain"))
        ruled = RuledMailroom(binary, os.path.join(tmp, "ruled"), smtp_port, receivers)
        for hub in (plain, ruled):
            os.makedirs(os.path.dirname(hub.data), exist_ok=True)
            hub.alice_key = hub.up_key = os.path.join(tmp, "keys", "alice")
            hub.bob_key = hub.down_key = os.path.join(tmp, "keys", "bob")
            hub.start()
        client = Client(tmp)
        rates = {plain.label: [], ruled.label: []}
        cpu_ms = {plain.label: [], ruled.label: []}
        jobs_per_s, latencies = [], []
        for r in range(a.rounds):
            log(f"round {r + 1} of {a.rounds}")
            local = os.path.join(tmp, f"files{r}")
            make_small_dir(local, a.files, f"r{r}-")
            order = (plain, ruled) if r % 2 == 0 else (ruled, plain)
            before = len(jobs(ruled))
            cpu_before = {}
            for hub in order:
                hub.settle()
                os.sync()
                cpu_before[hub.label] = hub.counters()["cpu"]
                t = client.run(hub, "up", [f"lcd {local}", f"cd {hub.up_dir}", "put *"])
                rates[hub.label].append(a.files / t)
                log(f"  {hub.label:15} {a.files} × 4 KiB upload {a.files / t:8.1f} files/s")
            cpu_ms[plain.label].append((plain.counters()["cpu"] - cpu_before[plain.label]) * 1000 / a.files)
            expected = before + 2 * a.files
            deadline = time.monotonic() + 600
            while True:
                listed = jobs(ruled)
                if len(listed) >= expected and all(j["state"] == "done" for j in listed):
                    break
                stuck = [j for j in listed if j["state"] not in ("queued", "done")]
                if stuck or time.monotonic() > deadline:
                    raise BenchError(f"jobs did not drain: {stuck[:3] or listed[:3]}")
                time.sleep(0.2)
            fresh = listed[: expected - before]  # newest first: this round's
            first = min(parse_time(j["created"]) for j in fresh)
            last = max(parse_time(j["updated"]) for j in fresh)
            rate = len(fresh) / max((last - first).total_seconds(), 1e-6)
            # The ruled hub's CPU once its jobs are done: the transfer's and the jobs' own.
            cpu_ms[ruled.label].append((ruled.counters()["cpu"] - cpu_before[ruled.label]) * 1000 / a.files)
            jobs_per_s.append(rate)
            waits = sorted((parse_time(j["updated"]) - parse_time(j["created"])).total_seconds() * 1000 for j in fresh if j["handler"] == "email")
            latencies.extend(waits)
            log(f"  {len(fresh)} jobs done at {rate:.0f} jobs/s; e-mail event to acceptance p50 {percentile(waits, 50):.0f} ms p99 {percentile(waits, 99):.0f} ms")
            shutil.rmtree(local)
        # Steady state: one upload every 20 ms (50 files/s, below what the queue drains), so the
        # time from event to acceptance is the queue's own, not a burst's backlog.
        paced_n = 20 if a.quick else 300
        before = len(jobs(ruled))
        sender = Driver(sys.executable, "send", "127.0.0.1", ruled.port, ruled.up_user, ruled.up_key, ruled.up_dir, paced_n, SMALL)
        sender.expect("ready")
        for _ in range(paced_n):
            sender.send("go")
            sender.expect("closed", timeout=60)
            time.sleep(0.02)
        sender.finish()
        deadline = time.monotonic() + 300
        while True:
            listed = jobs(ruled)
            if len(listed) >= before + 2 * paced_n and all(j["state"] == "done" for j in listed):
                break
            if time.monotonic() > deadline:
                raise BenchError("paced jobs did not drain")
            time.sleep(0.2)
        paced = sorted(
            (parse_time(j["updated"]) - parse_time(j["created"])).total_seconds() * 1000
            for j in listed[: 2 * paced_n]
            if j["handler"] == "email"
        )
        log(f"  paced: {paced_n} uploads at 50/s; e-mail event to acceptance p50 {percentile(paced, 50):.0f} ms p99 {percentile(paced, 99):.0f} ms")
        # The check before delivery: one clamd scan per upload, the file hidden until then.
        clamd, clamd_port = start_clamd(tmp)
        checked = CheckedMailroom(binary, os.path.join(tmp, "checked"), clamd_port)
        os.makedirs(os.path.dirname(checked.data), exist_ok=True)
        checked.alice_key = checked.up_key = os.path.join(tmp, "keys", "alice")
        checked.bob_key = checked.down_key = os.path.join(tmp, "keys", "bob")
        checked.start()
        ticks = os.sysconf("SC_CLK_TCK")
        scan_rates, scan_waits, check_rates, hub_cpu, clamd_cpu = [], [], [], [], []
        for r in range(a.rounds):
            local = os.path.join(tmp, f"scan{r}")
            make_small_dir(local, a.files, f"s{r}-")
            before = len(jobs(checked))
            checked.settle()
            cpu0, clamd0 = checked.counters()["cpu"], cpu_ticks(clamd.pid)
            t = client.run(checked, "up", [f"lcd {local}", f"cd {checked.up_dir}", "put *"])
            check_rates.append(a.files / t)
            deadline = time.monotonic() + 600
            while True:
                listed = jobs(checked)
                if len(listed) >= before + a.files and all(j["state"] == "done" for j in listed):
                    break
                stuck = [j for j in listed if j["state"] not in ("queued", "done")]
                if stuck or time.monotonic() > deadline:
                    raise BenchError(f"check jobs did not drain: {stuck[:3] or listed[:3]}")
                time.sleep(0.2)
            fresh = listed[: a.files]
            first = min(parse_time(j["created"]) for j in fresh)
            last = max(parse_time(j["updated"]) for j in fresh)
            scan_rates.append(len(fresh) / max((last - first).total_seconds(), 1e-6))
            scan_waits.extend((parse_time(j["updated"]) - parse_time(j["created"])).total_seconds() * 1000 for j in fresh)
            hub_cpu.append((checked.counters()["cpu"] - cpu0) * 1000 / a.files)
            clamd_cpu.append((cpu_ticks(clamd.pid) - clamd0) * 1000 / ticks / a.files)
            log(f"  {checked.label:15} {a.files} × 4 KiB upload {a.files / t:8.1f} files/s; {scan_rates[-1]:.0f} scans/s")
            shutil.rmtree(local)
        # Every checked file was delivered: bob downloads them all.
        fetched = os.path.join(tmp, "fetched")
        os.makedirs(fetched)
        client.run(checked, "down", [f"lcd {fetched}", f"cd {checked.down_dir}", "get *"])
        if len(os.listdir(fetched)) != a.files * a.rounds:
            raise BenchError(f"only {len(os.listdir(fetched))} of {a.files * a.rounds} checked files were delivered")
        scan_waits.sort()

        mails = len(os.listdir(os.path.join(maildir, "new")))
        expected = a.files * a.rounds + paced_n
        if mails < expected or Receiver.received < expected:
            raise BenchError(f"sinks got {mails} mails and {Receiver.received} webhooks, expected {expected} each")
        latencies.sort()
        with_rules = statistics.median(rates[ruled.label])
        without = statistics.median(rates[plain.label])
        ratio = with_rules / without
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        q50, q99 = percentile(paced, 50), percentile(paced, 99)
        lines = [
            f"Mailroom events bench, {a.rounds} round(s) of {a.files} × 4 KiB, medians"
            + (" (quick mode: the numbers mean nothing)" if a.quick else ""),
            "",
            "| Figure | Value | Target | Met? |",
            "|---|---:|---|---|",
            f"| Upload rate without rules (files/s) | {without:,.0f} | | |",
            f"| Upload rate with an e-mail and a webhook rule on each delivery (files/s) | {with_rules:,.0f} | | |",
            f"| Ratio, with rules over without | {ratio:.2f}× | ≥ 0.9× | {'met' if ratio >= 0.9 else 'NOT met'} |",
            f"| Hub CPU per file without rules (ms) | {statistics.median(cpu_ms[plain.label]):.2f} | | |",
            f"| Hub CPU per file with rules, its two jobs included (ms) | {statistics.median(cpu_ms[ruled.label]):.2f} | | |",
            f"| Jobs done per second (first queued to last done) | {statistics.median(jobs_per_s):,.0f} | | |",
            f"| Event to SMTP acceptance at 50 uploads/s, p50 (ms) | {q50:,.0f} | | |",
            f"| Event to SMTP acceptance at 50 uploads/s, p99 (ms) | {q99:,.0f} | < 1,000 ms | {'met' if q99 < 1000 else 'NOT met'} |",
            f"| Event to SMTP acceptance in the bursts above, p50 (ms) | {p50:,.0f} | | |",
            f"| Event to SMTP acceptance in the bursts above, p99 (ms) | {p99:,.0f} | | |",
            f"| Upload rate with the clamd check on (files/s) | {statistics.median(check_rates):,.0f} | | |",
            f"| Checks done per second (clamd INSTREAM, 4 KiB files) | {statistics.median(scan_rates):,.0f} | | |",
            f"| Scan cost per file: wall time per check at that rate (ms) | {1000 / statistics.median(scan_rates):.2f} | | |",
            f"| Scan cost per file: hub CPU, upload and check (ms) | {statistics.median(hub_cpu):.2f} | | |",
            f"| Scan cost per file: clamd CPU (ms) | {statistics.median(clamd_cpu):.2f} | | |",
            f"| Upload committed to delivered (hidden while checked), p50 / p99 (ms) | {percentile(scan_waits, 50):,.0f} / {percentile(scan_waits, 99):,.0f} | | |",
            "",
            "Per round: without rules " + " / ".join(f"{x:,.0f}" for x in rates[plain.label])
            + "; with rules " + " / ".join(f"{x:,.0f}" for x in rates[ruled.label])
            + "; jobs/s " + " / ".join(f"{x:,.0f}" for x in jobs_per_s),
        ]
        print("\n".join(lines), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"rates": rates, "cpu_ms_per_file": cpu_ms, "jobs_per_s": jobs_per_s, "burst_ms": latencies, "paced_ms": paced, "check_rates": check_rates, "scans_per_s": scan_rates, "scan_hub_cpu_ms": hub_cpu, "scan_clamd_cpu_ms": clamd_cpu, "check_wait_ms": scan_waits}, f, indent=2)
        ok = True
    finally:
        bench.kill_all()
        for receiver in receivers:
            receiver.shutdown()
        if not ok:
            bench.print_log_tails(tmp, ("plain/mailroom.log", "ruled/mailroom.log", "checked/mailroom.log"), 2000)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        print(f"bench/events: {exc}", file=sys.stderr)
        sys.exit(1)
