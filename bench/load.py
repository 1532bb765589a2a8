#!/usr/bin/env python3
"""The hub under load (issue 16, item 11), against one release-built hub on loopback:

  1. Sessions: SESSIONS idle authenticated SFTP sessions (paramiko, public key, a few
     logins at a time) plus TRANSFERRING sessions that upload or download FILE_MIB MiB in a
     loop for --seconds, while a legitimate client (account carol, from 127.0.0.1) logs in
     with its password every --interval seconds, uploads 4 KiB and downloads 4 KiB, and
     logs out. At the end every idle session is asked for one request: it must still work.
  2. Login storm: ATTEMPTS logins with wrong passwords (one connection each, account
     `target`) from ADDRESSES loopback addresses (127.0.0.2 …, the client socket bound to
     each), one worker per address, while the legitimate client goes on from 127.0.0.1.
     Then `mailroom --json ban list`, and three more connections from every banned address,
     each of which must be closed before the server's first SSH byte.
  3. Memory: the hub's VmRSS (/proc/PID/status) sampled every 0.5 s throughout: baseline,
     peak of each phase, and after the load has ended.

The hub runs with its defaults except: max_connections and max_connections_per_address
raised to fit the sessions (all from 127.0.0.1), the file descriptor limit raised to the hard
limit, and the safe list set to 127.0.0.1/32 alone: the legitimate client's address, as an
operator would list a partner or monitoring, so that it is not counted or dropped by the
startup limits (nor scored or banned; the sessions, also from 127.0.0.1, are not counted by
the startup limits either), while the storm's 127.0.0.2 … stay off it and can be banned. The
startup limits (max_startups "10:30:100", 10 per address) and the defender keep their
defaults: the storm meets what an operator would run.

Each paramiko group runs in its own process (`load.py worker …`), so that no group shares a
GIL with another or with the sampler. Prints a summary and writes JSON with --json. Numbers
are for reading; the run fails (exit 1) only when the hub dies. Needs paramiko (bench/load
finds the venv).
"""
import argparse
import json
import os
import queue
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SMALL = 4096


def log(message):
    print(f"[load bench] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Workers (run as `load.py worker KIND …` in their own process; paramiko imported there only).
# Each prints JSON lines on stdout; they stop when their stdin closes or reads a line.


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def stdin_closed_or_line():
    """Blocks until the harness writes a line or closes stdin."""
    sys.stdin.readline()


def stop_flag():
    """An Event set when the harness writes a line or closes stdin."""
    stop = threading.Event()

    def wait():
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait, daemon=True).start()
    return stop


def open_transport(port, user, key=None, password=None, bind=None, timeout=60):
    import paramiko

    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(bind, 0) if bind else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    transport.auth_timeout = timeout
    transport.start_client(timeout=timeout)
    if key is not None:
        transport.auth_publickey(user, paramiko.Ed25519Key.from_private_key_file(key))
    else:
        transport.auth_password(user, password)
    if not transport.is_authenticated():
        raise RuntimeError("not authenticated")
    return transport, paramiko.SFTPClient.from_transport(transport)


def worker_idle(port, user, key, count, parallel):
    """Opens COUNT sessions PARALLEL at a time, prints {"ready", "failed", "errors"}; on a line,
    asks each for one request and prints {"alive", "dead", "errors"}; then closes them."""
    from concurrent.futures import ThreadPoolExecutor

    threading.stack_size(512 * 1024)
    count = int(count)
    errors = []

    def one(_):
        try:
            transport, sftp = open_transport(int(port), user, key=key)
            sftp.normalize(".")
            # Idle: paramiko's reader thread wakes at its socket timeout (0.1 s by default)
            # only to notice a local close; once a second is enough here and spares the CPU.
            transport.sock.settimeout(1.0)
            return transport, sftp
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return None

    with ThreadPoolExecutor(max_workers=int(parallel)) as pool:
        sessions = [s for s in pool.map(one, range(count)) if s is not None]
    say({"ready": len(sessions), "failed": count - len(sessions), "errors": errors[:5]})
    stdin_closed_or_line()
    alive, dead, dead_errors = 0, 0, []

    def check(session):
        transport, sftp = session
        try:
            sftp.normalize(".")
            return None
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=16) as pool:
        for error in pool.map(check, sessions):
            if error is None:
                alive += 1
            else:
                dead += 1
                dead_errors.append(error)
    say({"alive": alive, "dead": dead, "errors": dead_errors[:5]})
    for transport, sftp in sessions:
        try:
            transport.close()
        except Exception:
            pass


def worker_transfer(port, mode, user, key, count, size_mib, first):
    """COUNT sessions (logging in two at a time), each looping: mode up puts FILE to
    /outbox/bob/t-PID-N-I, mode down gets /inbox/alice/seed.bin. On a line: prints
    {"files", "bytes", "errors", "error_samples"}."""
    count, size, first = int(count), int(size_mib) << 20, int(first)
    stop = stop_flag()
    data = os.urandom(size)
    totals = {"files": 0, "bytes": 0, "errors": 0, "error_samples": []}
    lock = threading.Lock()
    logins = threading.Semaphore(2)

    def loop(n):
        transport = None
        i = 0
        while not stop.is_set():
            try:
                if transport is None or not transport.is_active():
                    with logins:
                        transport, sftp = open_transport(int(port), user, key=key)
                if mode == "up":
                    with sftp.open(f"/outbox/bob/t-{os.getpid()}-{first + n:04d}-{i:05d}.bin", "wb") as f:
                        f.set_pipelined(True)
                        for off in range(0, size, 32768):
                            f.write(data[off:off + 32768])
                            if stop.is_set():
                                break
                    if stop.is_set():
                        break
                else:
                    with sftp.open("/inbox/alice/seed.bin", "rb") as f:
                        f.prefetch(size)
                        got = len(f.read())
                    if got != size:
                        raise RuntimeError(f"short download: {got}")
                with lock:
                    totals["files"] += 1
                    totals["bytes"] += size
                i += 1
            except Exception as exc:
                if stop.is_set():
                    break
                with lock:
                    totals["errors"] += 1
                    if len(totals["error_samples"]) < 5:
                        totals["error_samples"].append(f"{type(exc).__name__}: {exc}")
                transport = None
                time.sleep(0.5)
        if transport is not None:
            try:
                transport.close()
            except Exception:
                pass

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    say({"started": count})
    for t in threads:
        t.join()
    say(totals)


def worker_legit(port, user, password, interval, bind):
    """Every INTERVAL s: connect from BIND, password login, put 4 KiB to /outbox/bob, get
    /inbox/alice/small.bin, close. One line per round: {"t", "seconds", "ok", "error"}."""
    interval = float(interval)
    stop = stop_flag()
    data = os.urandom(SMALL)
    n = 0
    while not stop.is_set():
        start = time.monotonic()
        transport = None
        try:
            transport, sftp = open_transport(int(port), user, password=password, bind=bind, timeout=60)
            with sftp.open(f"/outbox/bob/legit-{os.getpid()}-{n:05d}.dat", "wb") as f:
                f.write(data)
            with sftp.open("/inbox/alice/small.bin", "rb") as f:
                if len(f.read()) != SMALL:
                    raise RuntimeError("short download")
            ok, error = True, None
        except Exception as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        finally:
            if transport is not None:
                try:
                    transport.close()
                except Exception:
                    pass
        seconds = time.monotonic() - start
        say({"t": start, "seconds": seconds, "ok": ok, "error": error})
        n += 1
        stop.wait(max(0.0, interval - seconds))


def worker_storm(port, user, first_address, addresses, attempts):
    """ATTEMPTS logins with a wrong password spread over ADDRESSES source addresses from
    127.0.0.FIRST on, one thread per address. Each attempt is one connection: `closed`
    when the server closed it before its first SSH byte, `refused` when the password was
    answered with a refusal, `error` otherwise. Prints one JSON object at the end."""
    import paramiko

    threading.stack_size(512 * 1024)
    first_address, addresses, attempts = int(first_address), int(addresses), int(attempts)
    results = {}
    lock = threading.Lock()

    def attempt(address):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(30)
        try:
            sock.bind((address, 0))
            sock.connect(("127.0.0.1", int(port)))
            try:
                first = sock.recv(1, socket.MSG_PEEK)
            except (ConnectionResetError, BrokenPipeError):
                first = b""
            if not first:
                return "closed", None
            transport = paramiko.Transport(sock)
            transport.banner_timeout = 30
            transport.auth_timeout = 30
            try:
                transport.start_client(timeout=30)
                transport.auth_password(user, "wrong-" + os.urandom(6).hex())
                return "accepted", None
            except paramiko.AuthenticationException:
                return "refused", None
            finally:
                transport.close()
        except Exception as exc:
            return "error", f"{type(exc).__name__}: {exc}"
        finally:
            sock.close()

    def run(index, share):
        address = f"127.0.0.{first_address + index}"
        mine = {"attempts": 0, "closed": 0, "refused": 0, "accepted": 0, "error": 0,
                "first_closed": None, "first_closed_s": None, "last_refused": None,
                "last_refused_s": None, "errors": []}
        for k in range(share):
            outcome, error = attempt(address)
            mine["attempts"] += 1
            mine[outcome] += 1
            if outcome == "closed" and mine["first_closed"] is None:
                mine["first_closed"] = k
                mine["first_closed_s"] = time.monotonic() - start
            if outcome == "refused":
                mine["last_refused"] = k
                mine["last_refused_s"] = time.monotonic() - start
            if error and len(mine["errors"]) < 3:
                mine["errors"].append(error)
        with lock:
            results[address] = mine

    shares = [attempts // addresses + (1 if i < attempts % addresses else 0) for i in range(addresses)]
    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(i, shares[i])) for i in range(addresses)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say({"seconds": time.monotonic() - start, "addresses": results})


def worker_probe(port, *addresses):
    """For each address: 3 connections; prints {address: [outcome…]} (closed | banner)."""
    out = {}
    for address in addresses:
        outcomes = []
        for _ in range(3):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(10)
            try:
                sock.bind((address, 0))
                sock.connect(("127.0.0.1", int(port)))
                try:
                    first = sock.recv(64)
                except (ConnectionResetError, BrokenPipeError):
                    first = b""
                outcomes.append("banner" if first else "closed")
            except Exception as exc:
                outcomes.append(f"error {type(exc).__name__}: {exc}")
            finally:
                sock.close()
        out[address] = outcomes
    say(out)


WORKERS = {"idle": worker_idle, "transfer": worker_transfer, "legit": worker_legit,
           "storm": worker_storm, "probe": worker_probe}


# ---------------------------------------------------------------------------------------------
# The harness.


def run(args, env=None, input=None, timeout=600):
    done = subprocess.run(args, env=env, input=input, capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({done.returncode}): "
                         f"{done.stdout.decode()} {done.stderr.decode()}")
    return done.stdout.decode()


class Worker:
    """A worker process with a JSON line reader on its stdout."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker", *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines = queue.Queue()
        self.all = []
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            obj = json.loads(line)
            self.all.append(obj)
            self.lines.put(obj)
        self.lines.put(None)

    def expect(self, timeout):
        try:
            obj = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(f"worker {self.proc.args[3]}: no answer within {timeout}s")
        if obj is None:
            raise SystemExit(f"worker {self.proc.args[3]} ended: {''.join(self.stderr)[-2000:]}")
        return obj

    def poke(self):
        try:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def finish(self, timeout=120):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Sampler:
    """The hub's VmRSS every 0.5 s, each sample tagged with the phase it was taken in."""

    def __init__(self, pid):
        self.pid = pid
        self.phase = "baseline"
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))

    def _run(self):
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.phase, self.rss_kib()))
            except (OSError, AttributeError):
                self.samples.append((time.monotonic(), self.phase, None))
            self.stop.wait(0.5)

    def of(self, phase):
        return [rss for _, p, rss in self.samples if p == phase and rss is not None]


class Hub:
    def __init__(self, binary, tmp, max_connections):
        self.binary = binary
        self.data = os.path.join(tmp, "data")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
        self.env.update(
            MAILROOM_DATA=self.data,
            MAILROOM_LOG="warn",
            MAILROOM_SFTP_LISTEN="127.0.0.1:0",
            MAILROOM_HTTPS_LISTEN="127.0.0.1:0",
            MAILROOM_SFTP_MAX_CONNECTIONS=str(max_connections),
            MAILROOM_SFTP_MAX_CONNECTIONS_PER_ADDRESS=str(max_connections),
            MAILROOM_AUTH_SAFE_NETWORKS='["127.0.0.1/32"]',
            MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS="2",
        )
        self.keys = os.path.join(tmp, "keys")
        os.makedirs(self.keys)
        self.password = "Load-" + os.urandom(9).hex()
        self.out = os.path.join(tmp, "serve.out")
        self.err = os.path.join(tmp, "serve.err")

    def cli(self, *args, input=None):
        return run([self.binary, *args], env=self.env, input=input)

    def start(self):
        self.cli("init")
        for name in ("alice", "bob", "carol", "idler", "target"):
            key = os.path.join(self.keys, name)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
            self.cli("account", "add", name, "--password-stdin", "--authorized-key", key + ".pub",
                     input=(self.password + "\n").encode())
        self.cli("route", "allow", "alice", "bob")
        self.cli("route", "allow", "alice", "carol")
        self.cli("route", "allow", "carol", "bob")
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=open(self.out, "wb"),
                                     stderr=open(self.err, "wb"), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        self.port = None
        while time.monotonic() < deadline and not self.port:
            found = re.search(r"sftp listening on 127\.0\.0\.1:(\d+)", open(self.out).read())
            self.port = found and int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.port:
            raise SystemExit(f"the hub did not start: {open(self.out).read()} {open(self.err).read()}")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def legit_summary(worker, t0=None):
    """p50/p99 of the successful rounds; failures with when they began (s after t0)."""
    rounds = [o for o in worker.all if "seconds" in o and "ok" in o]
    ok = [o["seconds"] for o in rounds if o["ok"]]
    errors = [o["error"] for o in rounds if not o["ok"]]
    return {"rounds": len(rounds), "failures": len(errors), "error_samples": sorted(set(errors))[:5],
            "p50_ms": percentile(ok, 50) and percentile(ok, 50) * 1000,
            "p99_ms": percentile(ok, 99) and percentile(ok, 99) * 1000,
            "max_ms": ok and max(ok) * 1000,
            "failures_at_s": [round(o["t"] - t0, 1) for o in rounds if not o["ok"]] if t0 is not None else None}


def legit_baseline(hub, rounds):
    """The legitimate client's round on the quiet hub, for comparison."""
    worker = Worker("legit", hub.port, "carol", hub.password, 0.2, "127.0.0.1")
    while len([o for o in worker.all if "ok" in o]) < rounds:
        worker.expect(timeout=120)
    worker.finish()
    return legit_summary(worker)


def phase_sessions(hub, sampler, args, tmp):
    sampler.phase = "sessions"
    legit = Worker("legit", hub.port, "carol", hub.password, args.interval, "127.0.0.1")
    # Logins ramp 8 at a time in all (4 processes, 2 each), the legitimate client's one
    # besides: the hub refuses the 11th unauthenticated connection of an address
    # (max_startups_per_address, default 10) and drops some from 10 in all (max_startups).
    log(f"opening {args.sessions} idle sessions")
    start = time.monotonic()
    per = max(1, -(-args.sessions // 4))
    idle = []
    left = args.sessions
    while left > 0:
        idle.append(Worker("idle", hub.port, "idler", os.path.join(hub.keys, "idler"), min(per, left), 2))
        left -= min(per, left)
    ready = [w.expect(timeout=1800) for w in idle]
    opened = sum(r["ready"] for r in ready)
    open_seconds = time.monotonic() - start
    log(f"  {opened} open in {open_seconds:.1f} s (failed: {sum(r['failed'] for r in ready)})")
    for r in ready:
        for e in r["errors"]:
            log(f"  idle login error: {e}")
    rss_idle = sampler.rss_kib()

    log(f"{args.transferring} sessions transferring {args.file_mib} MiB files for {args.seconds} s")
    ups = args.transferring - args.transferring // 2
    downs = args.transferring // 2
    transfer = []
    if ups:
        transfer.append(Worker("transfer", hub.port, "up", "alice", os.path.join(hub.keys, "alice"), ups,
                               args.file_mib, 0))
    if downs:
        transfer.append(Worker("transfer", hub.port, "down", "bob", os.path.join(hub.keys, "bob"), downs,
                               args.file_mib, 0))
    for w in transfer:
        w.expect(timeout=600)
    transfer_start = time.monotonic()
    time.sleep(args.seconds)
    for w in transfer:
        w.poke()
    totals = [w.expect(timeout=600) for w in transfer]
    transfer_seconds = time.monotonic() - transfer_start
    for w in transfer:
        w.finish()
    log("asking every idle session for one request")
    for w in idle:
        w.poke()
    checks = [w.expect(timeout=1800) for w in idle]
    for w in idle:
        w.finish(timeout=600)
    legit.finish()
    files = sum(t["files"] for t in totals)
    moved = sum(t["bytes"] for t in totals)
    result = {
        "sessions": args.sessions, "opened": opened, "open_seconds": open_seconds,
        "login_errors": sorted({e for r in ready for e in r["errors"]})[:5],
        "alive_at_end": sum(c["alive"] for c in checks), "dead_at_end": sum(c["dead"] for c in checks),
        "dead_errors": sorted({e for c in checks for e in c["errors"]})[:5],
        "rss_idle_mib": rss_idle / 1024,
        "transferring": args.transferring, "file_mib": args.file_mib, "transfer_seconds": transfer_seconds,
        "files": files, "mb_per_s": moved / 1e6 / transfer_seconds,
        "transfer_errors": sum(t["errors"] for t in totals),
        "transfer_error_samples": sorted({e for t in totals for e in t["error_samples"]})[:5],
        "legit": legit_summary(legit),
    }
    log(f"  transfers: {files} files, {result['mb_per_s']:.1f} MB/s, {result['transfer_errors']} errors; "
        f"idle sessions alive at the end: {result['alive_at_end']}/{opened}")
    return result


def phase_storm(hub, sampler, args):
    sampler.phase = "storm"
    legit = Worker("legit", hub.port, "carol", hub.password, args.interval, "127.0.0.1")
    time.sleep(args.interval)
    log(f"login storm: {args.attempts} wrong passwords from {args.addresses} addresses")
    storm_start = time.monotonic()
    groups = min(4, args.addresses)
    storm = []
    first = 2
    for g in range(groups):
        n = args.addresses // groups + (1 if g < args.addresses % groups else 0)
        share = args.attempts * n // args.addresses
        storm.append(Worker("storm", hub.port, "target", first, n, share))
        first += n
    outs = [w.expect(timeout=3600) for w in storm]
    for w in storm:
        w.finish()
    time.sleep(args.interval)
    legit.finish()
    per_address = {}
    for o in outs:
        per_address.update(o["addresses"])
    seconds = max(o["seconds"] for o in outs)
    # When each address was first closed at connect (s after the storm began): its ban, or
    # a startup drop before it.
    lasts = sorted(a["last_refused_s"] for a in per_address.values() if a["last_refused_s"] is not None)
    firsts = sorted(a["first_closed_s"] for a in per_address.values() if a["first_closed_s"] is not None)
    total = {k: sum(a[k] for a in per_address.values()) for k in ("attempts", "closed", "refused", "accepted", "error")}
    bans = json.loads(hub.cli("--json", "ban", "list"))
    subjects = [b.get("subject") for b in (bans if isinstance(bans, list) else bans.get("bans", []))]
    banned = sorted(s for s in subjects if s and not s.startswith("account:"))
    locked = sorted(s for s in subjects if s and s.startswith("account:"))
    storm_addresses = set(per_address)
    probe = Worker("probe", hub.port, *banned)
    probed = probe.expect(timeout=600)
    probe.finish()
    closed_probes = sum(o.count("closed") for o in probed.values())
    refused_before_ban = [a["last_refused"] + 1 for a in per_address.values() if a["last_refused"] is not None]
    result = {
        "attempts": total["attempts"], "addresses": args.addresses, "seconds": seconds,
        "attempts_per_s": total["attempts"] / seconds, "outcomes": total,
        "error_samples": sorted({e for a in per_address.values() for e in a["errors"]})[:5],
        "banned_addresses": len(storm_addresses & set(banned)),
        "other_banned": sorted(set(banned) - storm_addresses), "locked_accounts": locked,
        "last_refused_s_median": percentile(lasts, 50), "last_refused_s_max": lasts and lasts[-1],
        "first_closed_s_median": percentile(firsts, 50), "first_closed_s_max": firsts and firsts[-1],
        "refused_logins_per_address_max": max(refused_before_ban) if refused_before_ban else None,
        "probes": 3 * len(banned), "probes_closed_at_connect": closed_probes,
        "probe_other": sorted({o for v in probed.values() for o in v if o != "closed"})[:5],
        "legit": legit_summary(legit, storm_start),
    }
    log(f"  {total['attempts']} attempts in {seconds:.1f} s ({result['attempts_per_s']:.0f}/s): {total}; "
        f"banned {result['banned_addresses']}/{args.addresses}, locked {locked}; "
        f"probes closed at connect {closed_probes}/{3 * len(banned)}")
    return result


def print_summary(f):
    mib = lambda k: f"{k / 1024:.1f}"  # noqa: E731
    r, s, m = f["sessions"], f["storm"], f["memory"]

    def legit(label, x):
        p50 = "n/a" if x["p50_ms"] is None else f"{x['p50_ms']:.0f} ms"
        p99 = "n/a" if x["p99_ms"] is None else f"{x['p99_ms']:.0f} ms"
        at = f" at {x['failures_at_s']} s" if x.get("failures_at_s") else ""
        print(f"  legitimate client, {label}: {x['rounds']} rounds, p50 {p50}, p99 {p99}, failures {x['failures']}{at}"
              + (f" ({'; '.join(x['error_samples'])})" if x["error_samples"] else ""))

    print(f"hub: {f['hub']}")
    legit("quiet hub", f["legit_quiet"])
    print(f"sessions: {r['opened']}/{r['sessions']} idle sessions opened in {r['open_seconds']:.0f} s; "
          f"{r['alive_at_end']} still answering at the end, {r['dead_at_end']} not")
    print(f"  {r['transferring']} transferring ({r['file_mib']} MiB files, half up, half down) for "
          f"{r['transfer_seconds']:.0f} s: {r['files']} files, {r['mb_per_s']:.1f} MB/s, {r['transfer_errors']} errors")
    legit("under the sessions", r["legit"])
    print(f"storm: {s['attempts']} attempts from {s['addresses']} addresses in {s['seconds']:.1f} s "
          f"({s['attempts_per_s']:.0f}/s): {s['outcomes']['refused']} refused logins, "
          f"{s['outcomes']['closed']} closed at connect, {s['outcomes']['error']} errors, {s['outcomes']['accepted']} accepted")
    print(f"  last refused login (s into the storm): median {s['last_refused_s_median']:.1f}, "
          f"last {s['last_refused_s_max']:.1f}")
    print(f"  banned: {s['banned_addresses']}/{s['addresses']} addresses; locked: {', '.join(s['locked_accounts']) or 'none'}; "
          f"at most {s['refused_logins_per_address_max']} refused logins per address")
    print(f"  after the storm, {s['probes_closed_at_connect']}/{s['probes']} connections from banned addresses closed at connect")
    legit("during the storm", s["legit"])
    print(f"memory (VmRSS, MiB): baseline {mib(m['baseline_kib'])}, peak with sessions {mib(m['sessions_peak_kib'])}, "
          f"sessions closed {mib(m['between_kib'])}, peak in the storm {mib(m['storm_peak_kib'])}, after the load {mib(m['after_kib'])}")
    if len(m["between_rounds_kib"]) > 1:
        print(f"  VmRSS after each sessions round, sessions closed: "
              f"{', '.join(mib(k) for k in m['between_rounds_kib'])} MiB")
        for i, x in enumerate(f["sessions_rounds"][1:], 2):
            print(f"  round {i}: {x['opened']}/{x['sessions']} opened, {x['alive_at_end']} answering at the end, "
                  f"{x['files']} files, {x['transfer_errors']} transfer errors")
            legit(f"round {i}", x["legit"])
    print(f"hub alive at the end: {f['hub_alive']}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        WORKERS[sys.argv[2]](*sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, help="idle sessions (default 1000; --quick 50)")
    parser.add_argument("--transferring", type=int, help="transferring sessions (default 100; --quick 5)")
    parser.add_argument("--attempts", type=int, help="storm login attempts (default 10000; --quick 500)")
    parser.add_argument("--addresses", type=int, help="storm source addresses (default 50; --quick 10)")
    parser.add_argument("--seconds", type=int, help="how long the transfers run (default 60; --quick 10)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the sessions phase (default 1)")
    parser.add_argument("--file-mib", type=int, default=4, help="size of each transferred file (default 4)")
    parser.add_argument("--interval", type=float, default=1.0, help="the legitimate client's period (default 1 s)")
    parser.add_argument("--quick", action="store_true", help="50/5/500/10 and 10 s: proves the harness (CI)")
    parser.add_argument("--no-build", action="store_true", help="use the release binary as it is")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (data, hub logs)")
    args = parser.parse_args()
    defaults = dict(sessions=50, transferring=5, attempts=500, addresses=10, seconds=10) if args.quick else \
        dict(sessions=1000, transferring=100, attempts=10000, addresses=50, seconds=60)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not 1 <= args.addresses <= 250:
        parser.error("--addresses: 1 to 250 (127.0.0.2 … 127.0.0.251)")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (args.sessions + args.transferring) + 1024
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"the hard file descriptor limit {hard} is below the {needed} this run needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "mailroom")
    if not args.no_build:
        log("cargo build --release -p mailroom")
        run(["cargo", "build", "--release", "-p", "mailroom"], timeout=7200)
    began = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="mailroom-load-bench-")
    hub = Hub(binary, tmp, max(4096, 2 * (args.sessions + args.transferring) + 256))
    figures = {"args": {k: getattr(args, k) for k in ("sessions", "transferring", "attempts", "addresses",
                                                      "seconds", "file_mib", "interval", "rounds")}}
    sampler = None
    try:
        hub.start()
        figures["hub"] = (f"sftp max_connections {hub.env['MAILROOM_SFTP_MAX_CONNECTIONS']} (and per address), "
                          f"safe list 127.0.0.1/32 (the legitimate client), fd limit {hard}, "
                          f"other settings default")
        sampler = Sampler(hub.proc.pid)
        # The files the downloads read: bob's seed.bin and carol's small.bin, both from alice.
        seed = os.path.join(tmp, "seed.bin")
        with open(seed, "wb") as f:
            f.write(os.urandom(args.file_mib << 20))
        small = os.path.join(tmp, "small.bin")
        with open(small, "wb") as f:
            f.write(os.urandom(SMALL))
        for local, to in ((seed, "bob"), (small, "carol")):
            batch = os.path.join(tmp, "batch")
            with open(batch, "w") as f:
                f.write(f"put {local} /outbox/{to}/{os.path.basename(local)}\n")
            run(["sftp", "-q", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "BatchMode=yes", "-i", os.path.join(hub.keys, "alice"), "-P", str(hub.port),
                 "-b", batch, "alice@127.0.0.1"])
        time.sleep(2)
        log("the legitimate client on the quiet hub")
        figures["legit_quiet"] = legit_baseline(hub, 10 if args.quick else 30)
        # --rounds N repeats the sessions phase: the RSS after each round shows whether
        # memory comes back or keeps growing.
        figures["sessions_rounds"] = []
        between_rounds = []
        for round_ in range(args.rounds):
            if args.rounds > 1:
                log(f"sessions round {round_ + 1} of {args.rounds}")
            figures["sessions_rounds"].append(phase_sessions(hub, sampler, args, tmp))
            if not hub.alive():
                raise SystemExit("the hub died during the sessions phase")
            sampler.phase = "between"
            time.sleep(5)
            between_rounds.append(sampler.rss_kib())
        figures["sessions"] = figures["sessions_rounds"][0]
        between = between_rounds[-1]
        figures["storm"] = phase_storm(hub, sampler, args)
        sampler.phase = "after"
        log("after the load: 15 s of quiet")
        time.sleep(15)
        figures["hub_alive"] = hub.alive()
        after = sampler.of("after")
        figures["memory"] = {
            "baseline_kib": min(sampler.of("baseline")),
            "sessions_peak_kib": max(sampler.of("sessions")),
            "between_kib": between,
            "between_rounds_kib": between_rounds,
            "storm_peak_kib": max(sampler.of("storm")),
            "after_kib": after[-1] if after else None,
            "samples": len(sampler.samples),
        }
        figures["wall_seconds"] = time.monotonic() - began
    finally:
        if sampler is not None:
            sampler.stop.set()
        if hub.alive():
            hub.stop()
        elif hasattr(hub, "proc"):
            log(f"the hub exited with {hub.proc.returncode}: {open(hub.err).read()[-3000:]}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    print_summary(figures)
    print(f"(wall time {figures['wall_seconds']:.0f} s without the build)")
    if not figures["hub_alive"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
