#!/usr/bin/env python3
"""Mailroom against OpenSSH's sftp server (issue 3) and vsftpd's FTPS (issue 5), side by
side in one run.

Run it through `bench/run` (which finds or creates the Python venv with paramiko). It builds
the hub in release, starts a Mailroom hub on a fresh data folder and an OpenSSH `sshd` of
its own (own config, host key and port, `Subsystem sftp internal-sftp`), drives both with
the same OpenSSH `sftp` client and cipher, alternating Mailroom then OpenSSH for every
figure, for several rounds, and prints one table of medians. The FTPS step does the same
against a vsftpd of its own (own config, certificate and ports, anonymous upload), driven by
curl with the same TLS version and cipher for both. See docs/performance.md for what each
figure means.

Standard library only; the paramiko drivers live in drivers.py and run as child processes.
"""
import argparse
import datetime
import filecmp
import getpass
import json
import os
import platform
import pwd
import queue
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
DRIVERS = os.path.join(BENCH_DIR, "drivers.py")
SSHD = "/usr/sbin/sshd"
VSFTPD = "/usr/sbin/vsftpd"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
GIB = 1 << 30
AES = "aes128-gcm@openssh.com"
CHACHA = "chacha20-poly1305@openssh.com"
CIPHERS = {"aes": AES, "chacha": CHACHA}
SHORT = {"aes": "aes128-gcm", "chacha": "chacha20-poly1305"}
SMALL = 4096
# The same key exchange for both: OpenSSH 9.x would otherwise pick sntrup761x25519 with sshd
# (about 100 ms more per login here) and curve25519 with Mailroom.
KEX = "curve25519-sha256"
# FTPS, both servers: TLS 1.2 with this suite and the P-256 group (curl pins all three;
# vsftpd 3.0.3 does ECDHE on P-256 only). Both servers hold an ECDSA P-256 key (Mailroom's is
# the data folder's PKI server certificate, vsftpd's one made for the run with `openssl
# req`), so the handshake and the record layer are the same; only the server code differs.
FTPS_CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"
FTPS_CURVE = "P-256"

START = time.monotonic()


class BenchError(Exception):
    """The harness itself broke (never raised because of a number)."""


def log(message):
    print(f"[{time.monotonic() - START:7.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# /proc helpers


def proc_stat(pid):
    """(ppid, utime, stime, cutime, cstime) in clock ticks."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    rest = data[data.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3].
    return int(rest[1]), int(rest[11]), int(rest[12]), int(rest[13]), int(rest[14])


def context_switches(pid):
    """Voluntary + involuntary context switches so far of each live thread of a process, by
    thread id. Linux keeps no count for the whole process, and a thread's count goes with it
    when it ends (the blocking pool's threads come and go), so a delta is taken per thread:
    see `switches_since`."""
    counts = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return counts
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                total = 0
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
                counts[task] = total
        except OSError:
            pass  # a thread that ended meanwhile
    return counts


def switches_since(before, after):
    """Context switches between two `context_switches` readings: each thread alive at the end
    counts from where it stood before (or from zero, if it started since). A thread that
    started and ended in between is not counted, so this is a floor."""
    return sum(count - before.get(task, 0) for task, count in after.items())


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            return []
    except OSError:
        pass
    # Kernels without CONFIG_PROC_CHILDREN: scan /proc.
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if proc_stat(int(entry))[0] == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def tree(pid):
    """pid and all its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class RssSampler:
    """Samples the summed VmRSS of a process tree in a thread; keeps the peak."""

    def __init__(self, pid, interval=0.05):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self):
        rss = sum(status_kib(p, "VmRSS") for p in tree(self.pid))
        self.peak = max(self.peak, rss)
        self.samples += 1
        return rss

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


class ListenerCpu:
    """Server CPU seconds around one transfer, from the listener's utime + stime + cutime +
    cstime (Server.cpu_seconds): right for Mailroom (one process) and for sshd, whose session
    processes are all reaped by their parents up to the listener."""

    def __init__(self, server):
        self.server = server
        self.seconds = 0.0

    def __enter__(self):
        self.start = self.server.cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.seconds = self.server.cpu_seconds() - self.start


class TreeCpu:
    """Server CPU seconds around one transfer for vsftpd, sampled from the session processes
    themselves. vsftpd's listener forks a session process, which forks the processes that do
    the work (the TLS and file I/O run in them), and not every one of those is waited for by
    its parent: measured, the listener's cutime + cstime grew by 0.79 s for an upload whose
    session processes had used 1.42 s themselves (a process whose parent exits without
    waiting for it is reaped elsewhere). So: every 10 ms, each process in the listener's tree has its own utime + stime
    read (never cutime/cstime, so nothing is counted twice); each process counts with the
    last value seen, and sampling goes on after the transfer until the tree is back to the
    listener alone, so that an exited but unreaped process (a zombie keeps its final
    times in /proc) is read once more. The result is the listener's own utime + stime
    difference plus that sum; it can miss at most the last 10 ms of a process that is
    reaped within the same 10 ms as it exits."""

    def __init__(self, server, interval=0.01):
        self.server, self.interval = server, interval
        self.seconds = 0.0
        self.own = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        for p in tree(self.server.pid)[1:]:
            try:
                _, ut, st, _, _ = proc_stat(p)
            except (OSError, ValueError, IndexError):
                continue
            self.own[p] = max(self.own.get(p, 0), ut + st)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def _listener(self):
        _, ut, st, _, _ = proc_stat(self.server.pid)
        return ut + st

    def __enter__(self):
        self.server.settle()
        self.start = self._listener()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        deadline = time.monotonic() + 30
        while len(tree(self.server.pid)) > 1 and time.monotonic() < deadline:
            self._sample()
            time.sleep(self.interval)
        self._stop.set()
        self._thread.join()
        self.seconds = (self._listener() - self.start + sum(self.own.values())) / CLK_TCK


# ---------------------------------------------------------------------------------------
# processes we own


OWNED = []  # Popen objects started in their own process group, killed at exit


def spawn(args, **kwargs):
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    OWNED.append(proc)
    return proc


def kill_group(proc, grace=5.0):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # Also whatever is left in the group (sshd's session children, ssh under sftp).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def kill_all():
    while OWNED:
        kill_group(OWNED.pop())


def run(args, timeout=600, check=True, input=None, **kwargs):
    """Runs a command in its own process group with a hard time limit; `input` (bytes) is its
    standard input."""
    stdin = subprocess.DEVNULL if input is None else subprocess.PIPE
    proc = spawn(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin, **kwargs)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc, grace=0.5)
        raise BenchError(f"timed out after {timeout}s: {' '.join(map(str, args))}")
    finally:
        if proc in OWNED:
            OWNED.remove(proc)
    if check and proc.returncode != 0:
        raise BenchError(
            f"exit {proc.returncode}: {' '.join(map(str, args))}\n{out.decode(errors='replace')[-2000:]}{err.decode(errors='replace')[-2000:]}"
        )
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class Driver:
    """A paramiko driver process (drivers.py) with a line reader on its stdout."""

    def __init__(self, python, *args):
        self.proc = spawn(
            [python, DRIVERS, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines = queue.Queue()
        self.stderr = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def expect(self, word, timeout=120):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"driver {self.proc.args[2]}: no '{word}' within {timeout}s")
        if line is None or not line.startswith(word):
            raise BenchError(f"driver {self.proc.args[2]}: expected '{word}', got {line!r}; stderr: {''.join(self.stderr)[-2000:]}")
        return line.split()[1:]

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout=120):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"driver {self.proc.args[2]} did not exit")
        finally:
            kill_group(self.proc, grace=0.5)
            if self.proc in OWNED:
                OWNED.remove(self.proc)
        if self.proc.returncode != 0:
            raise BenchError(f"driver {self.proc.args[2]} failed: {''.join(self.stderr)[-2000:]}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(count):
    """The first of `count` consecutive loopback ports that are all free right now (the
    passive data ports of an FTPS server)."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(30000)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise BenchError(f"no {count} consecutive free ports")


def wait_for_line(path, pattern, proc, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                match = re.search(pattern, f.read())
            if match:
                return match
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    with open(path, errors="replace") as f:
        text = f.read()
    raise BenchError(f"{what} did not start (exit {proc.poll()}): {text[-2000:]}")


def keygen(path, comment):
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])


# ---------------------------------------------------------------------------------------
# the two servers


class Server:
    label = "?"
    proc = None
    port = 0
    up_user = up_key = up_dir = None
    down_user = down_key = down_dir = None

    @property
    def pid(self):
        return self.proc.pid

    def settle(self, timeout=30):
        """Waits until the server has no session processes left (sshd forks per connection;
        their CPU is added to the listener's cutime/cstime only once they are reaped)."""
        deadline = time.monotonic() + timeout
        while len(tree(self.pid)) > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.proc.poll() is not None:
            raise BenchError(f"{self.label} server exited (code {self.proc.returncode}); see {self.log_path}")

    def cpu_seconds(self):
        self.settle()
        _, ut, st, cut, cst = proc_stat(self.pid)
        return (ut + st + cut + cst) / CLK_TCK

    def rss_kib(self):
        return sum(status_kib(p, "VmRSS") for p in tree(self.pid))

    def cpu_meter(self):
        return ListenerCpu(self)

    def restart(self):
        """Stops the server (SIGTERM to its process group) and starts it again, so that a
        memory figure starts from a fresh process rather than a heap warmed by earlier steps."""
        kill_group(self.proc)
        OWNED.remove(self.proc)
        self.serve()

    def pss_kib(self):
        return sum(pss_kib(p) for p in tree(self.pid))


class Mailroom(Server):
    label = "Mailroom"

    def __init__(self, binary, tmp, ftps=False):
        self.binary = binary
        self.ftps = ftps
        self.data = os.path.join(tmp, "mailroom-data")
        keys = os.path.join(tmp, "keys")
        self.log_path = os.path.join(tmp, "mailroom.log")
        self.out_path = os.path.join(tmp, "mailroom.out")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
        self.env.update(
            MAILROOM_DATA=self.data,
            # warn, plus the one info line SIGUSR1 asks for (the store's counters).
            MAILROOM_LOG="warn,mailroom::stats=info",
            MAILROOM_SFTP_LISTEN="127.0.0.1:0",
            # The HTTPS front end is not measured here; off, so the hub is as in earlier runs.
            MAILROOM_HTTPS_ENABLED="false",
            MAILROOM_SFTP_MAX_CONNECTIONS_PER_ADDRESS="1000",
            MAILROOM_SFTP_MAX_CONNECTIONS="2000",
            # As sshd's MaxStartups below: the bench opens many sessions at once from one address.
            MAILROOM_SFTP_MAX_STARTUPS="1000:30:1000",
            MAILROOM_SFTP_MAX_STARTUPS_PER_ADDRESS="1000",
            MAILROOM_SERVER_SHUTDOWN_GRACE_SECONDS="2",
        )
        # FTPS only when the FTPS step runs, so that the other figures see the hub as before.
        # Both accounts also get a password (FTP has no keys); either factor logs in.
        self.password = secrets.token_urlsafe(18)
        if ftps:
            self.passive = free_port_range(20)
            self.env.update(
                MAILROOM_FTPS_ENABLED="true",
                MAILROOM_FTPS_LISTEN="127.0.0.1:0",
                MAILROOM_FTPS_PASSIVE_PORTS=f"{self.passive}-{self.passive + 19}",
            )
        self.ca = os.path.join(self.data, "tls", "server-ca.crt")
        self.ftps_port = 0
        self.alice_key = os.path.join(keys, "alice")
        self.bob_key = os.path.join(keys, "bob")
        self.up_user, self.up_key, self.up_dir = "alice", self.alice_key, "/outbox/bob"
        self.down_user, self.down_key, self.down_dir = "bob", self.bob_key, "/inbox/alice"

    def admin(self, *args, input=None):
        run([self.binary, *args], env=self.env, timeout=120, input=input)

    def counters(self):
        """What the hub has done so far, for per-file figures: its CPU seconds (all threads),
        context switches (all threads), and the store's counters, which `kill -USR1` makes it
        log (reads, writes, hops, commits, flushes; file_operations: file operations of the
        Hub that reached the store)."""
        self.settle()
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = f.tell()
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        values = None
        while values is None:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                for line in f.read().decode(errors="replace").splitlines():
                    if "store statistics" in line:
                        values = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
            if values is None:
                if time.monotonic() > deadline:
                    raise BenchError(f"Mailroom logged no store statistics after SIGUSR1; see {self.log_path}")
                time.sleep(0.01)
        _, ut, st, _, _ = proc_stat(self.pid)
        values["cpu"] = (ut + st) / CLK_TCK
        values["ctx"] = context_switches(self.pid)
        return values

    def configure(self):
        """After `init`, before anything else: a subclass's changes to mailroom.toml."""

    def start(self):
        self.admin("init")
        self.configure()
        pw = (self.password + "\n").encode()
        self.admin("account", "add", "alice", "--password-stdin", "--authorized-key", self.alice_key + ".pub", input=pw)
        self.admin("account", "add", "bob", "--password-stdin", "--authorized-key", self.bob_key + ".pub", input=pw)
        self.admin("route", "allow", "alice", "bob")
        self.serve()

    def serve(self):
        with open(self.out_path, "wb") as out, open(self.log_path, "ab") as err:
            self.proc = spawn([self.binary, "serve"], env=self.env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        match = wait_for_line(self.out_path, r"sftp listening on 127\.0\.0\.1:(\d+)", self.proc, 60, "mailroom serve")
        self.port = int(match.group(1))
        log(f"Mailroom pid {self.pid} listening on 127.0.0.1:{self.port}")
        if self.ftps:
            match = wait_for_line(self.out_path, r"ftps listening on 127\.0\.0\.1:(\d+)", self.proc, 60, "mailroom serve (ftps)")
            self.ftps_port = int(match.group(1))
            log(f"Mailroom FTPS on 127.0.0.1:{self.ftps_port}, passive ports {self.passive}-{self.passive + 19}")

    # FTPS: alice uploads to her outbox for bob, bob downloads the delivery from his inbox
    # (a download does not consume it; the untimed cleanup deletes it, which acknowledges).
    def ftps_url(self, role, name):
        if role == "up":
            return "alice", self.password, f"ftp://127.0.0.1:{self.ftps_port}/outbox/bob/{name}"
        return "bob", self.password, f"ftp://127.0.0.1:{self.ftps_port}/inbox/alice/{name}"

    def ftps_clear(self, name):
        run(ftps_command(self, "down", [f"-Q", f"DELE /inbox/alice/{name}"], url=f"ftp://127.0.0.1:{self.ftps_port}/"), timeout=120)


class OpenSSH(Server):
    label = "OpenSSH"

    def __init__(self, tmp, alice_key, bob_key):
        self.dir = os.path.join(tmp, "sshd")
        self.target = os.path.join(tmp, "sshd-target")
        self.log_path = os.path.join(self.dir, "sshd.log")
        user = getpass.getuser()
        # The same two client keys as for Mailroom, both for the user running the bench.
        self.up_user, self.up_key, self.up_dir = user, alice_key, self.target
        self.down_user, self.down_key, self.down_dir = user, bob_key, self.target
        self.alice_pub, self.bob_pub = alice_key + ".pub", bob_key + ".pub"

    def config(self, extra=""):
        return f"""# bench/run: a private sshd for the comparison, nothing else.
ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.dir}/ssh_host_ed25519_key
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AuthorizedKeysFile {self.dir}/authorized_keys
Subsystem sftp internal-sftp
MaxStartups 1000:30:1000
MaxSessions 1000
MaxAuthTries 6
LoginGraceTime 120
UseDNS no
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
PrintLastLog no
LogLevel INFO
{extra}"""

    def start(self):
        if not os.path.exists(SSHD):
            install_sshd()
        os.makedirs(self.dir)
        os.makedirs(self.target)
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        keygen(os.path.join(self.dir, "ssh_host_ed25519_key"), "bench-sshd-host")
        with open(os.path.join(self.dir, "authorized_keys"), "w") as f:
            for pub in (self.alice_pub, self.bob_pub):
                with open(pub) as p:
                    f.write(p.read())
        self.port = free_port()
        conf = self.conf = os.path.join(self.dir, "sshd_config")
        # Newer OpenSSH (9.8+) penalises sources; keep it off if this sshd knows the option.
        with open(conf, "w") as f:
            f.write(self.config("PerSourcePenalties no\n"))
        if run([SSHD, "-t", "-f", conf], check=False)[0] != 0:
            with open(conf, "w") as f:
                f.write(self.config())
            run([SSHD, "-t", "-f", conf])
        self.serve()

    def serve(self):
        self.starts = getattr(self, "starts", 0) + 1
        with open(self.log_path, "ab") as err:
            self.proc = spawn([SSHD, "-D", "-e", "-f", self.conf], stdout=err, stderr=err, stdin=subprocess.DEVNULL)
        # The log is appended to: wait for this start's own "Server listening" line.
        deadline = time.monotonic() + 30
        while True:
            with open(self.log_path, errors="replace") as f:
                if f.read().count("Server listening on 127.0.0.1 port") >= self.starts:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"sshd did not start (exit {self.proc.poll()}); see {self.log_path}")
            time.sleep(0.05)
        log(f"OpenSSH sshd pid {self.pid} listening on 127.0.0.1:{self.port}")


def install_sshd():
    install_package("openssh-server", SSHD)


class Vsftpd(Server):
    """vsftpd 3.0.3 (Debian's package) as an explicit-FTPS server: foreground, loopback, its
    own config, certificate and ports, anonymous login and upload (no system user to create:
    anonymous sessions run as the package's `ftp` user), TLS required on login and data."""

    label = "vsftpd"

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "vsftpd")
        self.log_path = os.path.join(self.dir, "vsftpd.log")
        # anon_root must not be writable by the ftp user (vsftpd refuses a writable chroot):
        # root-owned 0755, uploads go to its 0777 upload/.
        self.root = os.path.join(self.dir, "root")
        self.upload = os.path.join(self.root, "upload")
        self.ca = os.path.join(self.dir, "cert.pem")

    def config(self):
        d = self.dir
        return f"""# bench/run: a private vsftpd for the FTPS comparison, nothing else.
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={self.port}
background=NO
anonymous_enable=YES
local_enable=NO
no_anon_password=YES
write_enable=YES
anon_upload_enable=YES
# Uploads world-readable, so that anonymous may download them (anon_world_readable_only).
anon_umask=022
anon_mkdir_write_enable=NO
anon_other_write_enable=NO
anon_root={self.root}
secure_chroot_dir={d}/empty
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
force_local_logins_ssl=YES
force_local_data_ssl=YES
# Both servers require the data connection to resume the control connection's TLS session
# (Mailroom's require_tls_resumption default); curl does.
require_ssl_reuse=YES
# Mailroom does not ask for client certificates by default either.
ssl_request_cert=NO
ssl_ciphers=HIGH
rsa_cert_file={d}/cert.pem
rsa_private_key_file={d}/key.pem
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={self.passive}
pasv_max_port={self.passive + 19}
port_enable=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
max_clients=0
max_per_ip=0
xferlog_enable=NO
vsftpd_log_file={d}/vsftpd-session.log
"""

    def start(self):
        if os.geteuid() != 0:
            raise BenchError("vsftpd needs root here (anonymous sessions chroot and drop to the ftp user)")
        if not os.path.exists(VSFTPD):
            install_package("vsftpd", VSFTPD)
        try:
            pwd.getpwnam("ftp")
        except KeyError:
            raise BenchError("no 'ftp' user for vsftpd's anonymous sessions (the vsftpd package creates it)")
        os.makedirs(self.upload)
        os.makedirs(os.path.join(self.dir, "empty"))
        for path, mode in ((self.dir, 0o755), (self.root, 0o755), (os.path.join(self.dir, "empty"), 0o755), (self.upload, 0o777)):
            os.chmod(path, mode)
        run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", os.path.join(self.dir, "key.pem"), "-out", self.ca, "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        )  # fmt: skip
        self.port = free_port()
        self.passive = free_port_range(20)
        self.conf = os.path.join(self.dir, "vsftpd.conf")
        with open(self.conf, "w") as f:
            f.write(self.config())
        self.serve()

    def serve(self):
        with open(self.log_path, "ab") as err:
            self.proc = spawn([VSFTPD, self.conf], stdout=err, stderr=err, stdin=subprocess.DEVNULL)
        # vsftpd prints nothing when it is ready: wait until the port greets with 220. That
        # probe's session process is gone again before any measurement (settle()).
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if s.recv(64).startswith(b"220"):
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log_path, errors="replace") as f:
                    said = f.read()[-500:].strip()
                raise BenchError(f"vsftpd did not start (exit {self.proc.poll()}): {said or 'no output'}")
            time.sleep(0.05)
        log(f"vsftpd pid {self.pid} listening on 127.0.0.1:{self.port}, passive ports {self.passive}-{self.passive + 19}")

    def cpu_meter(self):
        # Not the listener's cutime/cstime: see TreeCpu.
        return TreeCpu(self)

    def ftps_url(self, role, name):
        return "anonymous", "", f"ftp://127.0.0.1:{self.port}/upload/{name}"

    def ftps_clear(self, name):
        path = os.path.join(self.upload, name)
        if os.path.exists(path):
            os.remove(path)


def install_package(package, binary):
    log(f"{binary} is missing: apt-get install {package}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=env, timeout=900)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package], env=env, timeout=900)
    if not os.path.exists(binary):
        raise BenchError(f"{package} installed but {binary} is still missing")


# ---------------------------------------------------------------------------------------
# the client


def ssh_options(cipher):
    return [
        "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=30",
        "-o", f"KexAlgorithms={KEX}",
        "-o", f"Ciphers={cipher}",
    ]  # fmt: skip


def ftps_command(server, role, extra, url=None, name="big"):
    """curl for one FTPS session: explicit TLS (AUTH TLS, then PROT P: --ssl-reqd), passive
    (EPSV), TLS 1.2 with FTPS_CIPHER and FTPS_CURVE, the server's CA trusted."""
    user, password, default_url = server.ftps_url(role, name)
    return [
        "curl", "-sS", "--ssl-reqd", "--cacert", server.ca,
        "--tlsv1.2", "--tls-max", "1.2", "--ciphers", FTPS_CIPHER, "--curves", FTPS_CURVE,
        "--ftp-pasv", "--user", f"{user}:{password}", *extra, url or default_url,
    ]  # fmt: skip


class Client:
    def __init__(self, tmp):
        self.batches = os.path.join(tmp, "batches")
        os.makedirs(self.batches)
        self.count = 0

    def command(self, server, role, commands, cipher=AES):
        user, key = (server.up_user, server.up_key) if role == "up" else (server.down_user, server.down_key)
        self.count += 1
        batch = os.path.join(self.batches, f"b{self.count}")
        with open(batch, "w") as f:
            f.write("\n".join(commands) + "\n")
        return ["sftp", *ssh_options(cipher), "-i", key, "-P", str(server.port), "-b", batch, f"{user}@127.0.0.1"]

    def run(self, server, role, commands, cipher=AES, timeout=1800):
        """Runs one batch session; returns its wall time in seconds."""
        args = self.command(server, role, commands, cipher)
        start = time.monotonic()
        run(args, timeout=timeout)
        return time.monotonic() - start

    def parallel(self, server, role, batches, cipher=AES, timeout=1800):
        """Runs several batch sessions at once; returns the wall time until the last ends."""
        procs = []
        start = time.monotonic()
        for commands in batches:
            args = self.command(server, role, commands, cipher)
            procs.append((args, spawn(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)))
        failures = []
        outputs = []
        for args, proc in procs:
            try:
                out, _ = proc.communicate(timeout=max(1, timeout - (time.monotonic() - start)))
            except subprocess.TimeoutExpired:
                kill_group(proc, 0.5)
                out = b"(timed out)"
            outputs.append(out)
            if proc.returncode != 0:
                failures.append(f"{' '.join(args)}: {out.decode(errors='replace')[-1000:]}")
        elapsed = time.monotonic() - start
        for _, proc in procs:
            kill_group(proc, 0.1)
            OWNED.remove(proc)
        if failures:
            raise BenchError(f"{len(failures)} of {len(procs)} sessions failed; first: {failures[0]}")
        return elapsed


# ---------------------------------------------------------------------------------------
# local files


def write_random(path, size):
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 * MIB))
            f.write(chunk)
            left -= len(chunk)


def make_small_dir(path, count, prefix):
    os.makedirs(path)
    for i in range(count):
        with open(os.path.join(path, f"{prefix}{i:05d}.dat"), "wb") as f:
            f.write(os.urandom(SMALL))


def empty_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def durable_ceiling(directory, count):
    """4 KiB files written, fsynced, renamed into place, directory fsynced, one after
    another (what a durable small upload cannot avoid). Returns files/s."""
    empty_dir(directory)
    data = os.urandom(SMALL)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        start = time.monotonic()
        for i in range(count):
            tmp = os.path.join(directory, f"{i}.part")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(directory, f"{i}.dat"))
            os.fsync(dir_fd)
        elapsed = time.monotonic() - start
    finally:
        os.close(dir_fd)
    shutil.rmtree(directory, ignore_errors=True)
    return count / elapsed


# ---------------------------------------------------------------------------------------
# the measurements


class Bench:
    def __init__(self, args, tmp, python):
        self.args, self.tmp, self.python = args, tmp, python
        self.client = Client(tmp)
        self.results = {}  # (server label, key) -> [values per round]
        self.local = os.path.join(tmp, "local")
        self.dl = os.path.join(tmp, "download")
        os.makedirs(self.local)
        os.makedirs(self.dl)

    def record(self, server, key, value):
        label = server if isinstance(server, str) else server.label
        self.results.setdefault((label, key), []).append(value)

    def prepare_files(self):
        a = self.args
        log(f"writing local files: {a.big_mib} MiB, {a.small_files} × 4 KiB, {a.concurrent} × {a.concurrent_files} × 4 KiB")
        self.big = os.path.join(self.local, "big.bin")
        write_random(self.big, a.big_mib * MIB)
        self.conc_big = os.path.join(self.local, "conc.bin")
        write_random(self.conc_big, a.concurrent_mib * MIB)
        self.small = os.path.join(self.local, "small")
        make_small_dir(self.small, a.small_files, "f")
        self.conc_small = []
        for s in range(a.concurrent):
            path = os.path.join(self.local, f"csmall{s:02d}")
            make_small_dir(path, a.concurrent_files, f"c{s:02d}-")
            self.conc_small.append(path)

    def metered(self, server, step, files, work):
        """Runs `work` (which returns its timed seconds) and, for Mailroom, records what each
        of `files` files cost the hub: store hops per file and per file operation, commits
        per file, CPU milliseconds and context switches per file. The counters are read
        before and after, outside the timed part."""
        before = server.counters() if isinstance(server, Mailroom) else None
        t = work()
        if before is not None:
            after = server.counters()
            d = {k: after[k] - before[k] for k in after if k != "ctx"}
            d["ctx"] = switches_since(before["ctx"], after["ctx"])
            ops = d.get("file_operations", 0)
            self.record(server, f"{step}_hops_file", d["hops"] / files)
            self.record(server, f"{step}_hops_op", d["hops"] / ops if ops else float("nan"))
            self.record(server, f"{step}_commits_file", d["commits"] / files)
            self.record(server, f"{step}_cpu_ms_file", d["cpu"] * 1000 / files)
            self.record(server, f"{step}_ctx_file", d["ctx"] / files)
            log(
                f"  {server.label:8} {step}: {d['hops'] / files:.2f} hops/file, "
                f"{(d['hops'] / ops if ops else float('nan')):.3f} hops/operation, "
                f"{d['commits'] / files:.2f} commits/file, {d['cpu'] * 1000 / files:.3f} ms CPU/file, "
                f"{d['ctx'] / files:.1f} context switches/file"
            )
        return t

    def quiet(self, server):
        """Before every timed step: no session processes left and no dirty pages from the
        previous step, so one server's writeback does not land in the other's figure."""
        server.settle()
        os.sync()

    def clear_remote(self, server):
        self.client.run(server, "down", [f"-rm {server.down_dir}/*"])
        server.settle()
        if isinstance(server, OpenSSH):
            left = os.listdir(server.target)
            if left:
                raise BenchError(f"sshd target not empty after rm: {left[:5]}")

    # -- one session, big files ----------------------------------------------------------
    def big_files(self, servers):
        size = self.args.big_mib * MIB
        for short, cipher in CIPHERS.items():
            for s in servers:
                self.quiet(s)
                cpu = s.cpu_seconds()
                t = self.client.run(s, "up", [f"put {self.big} {s.up_dir}/big.bin"], cipher)
                cpu = s.cpu_seconds() - cpu
                self.record(s, f"up_{short}", size / t / 1e6)
                self.record(s, f"cpu_up_{short}", cpu / (size / GIB))
                log(f"  {s.label:8} upload   {SHORT[short]:17} {size / t / 1e6:8.1f} MB/s  cpu {cpu:.2f}s")
            for s in servers:
                self.quiet(s)
                cpu = s.cpu_seconds()
                # Timed to /dev/null: the figure is the server's. sftp's writes to a file on
                # this disk made the same download vary 2x from run to run (see
                # docs/performance.md), whichever server sent it.
                t = self.client.run(s, "down", [f"get {s.down_dir}/big.bin /dev/null"], cipher)
                cpu = s.cpu_seconds() - cpu
                self.record(s, f"down_{short}", size / t / 1e6)
                self.record(s, f"cpu_down_{short}", cpu / (size / GIB))
                log(f"  {s.label:8} download {SHORT[short]:17} {size / t / 1e6:8.1f} MB/s  cpu {cpu:.2f}s")
                # Untimed: the same download to a file, compared byte for byte, so that a
                # server sending too little can never look fast.
                self.client.run(s, "down", [f"get {s.down_dir}/big.bin {self.dl}/big.bin"], cipher)
                if not filecmp.cmp(self.big, f"{self.dl}/big.bin", shallow=False):
                    raise BenchError(f"{s.label}: downloaded file differs from the uploaded one")
                os.remove(f"{self.dl}/big.bin")
                self.clear_remote(s)

    # -- FTPS, one session, big file ---------------------------------------------------
    def ftps(self, servers):
        """1 GiB (--big-mib) up then down through curl, Mailroom then vsftpd for each; the
        delivery (or file) is removed afterwards, untimed."""
        size = self.args.big_mib * MIB
        for direction in ("up", "down"):
            for s in servers:
                self.quiet(s)
                if direction == "up":
                    args = ftps_command(s, "up", ["-T", self.big])
                else:
                    # To /dev/null: the figure is the server's; curl's writes to a file on
                    # this disk made the same download vary 2x from run to run (see
                    # docs/performance.md). curl reports the bytes it received.
                    args = ftps_command(s, "down", ["-o", "/dev/null", "-w", "%{size_download}"])
                with s.cpu_meter() as meter:
                    start = time.monotonic()
                    _, out, _ = run(args, timeout=1800)
                    t = time.monotonic() - start
                cpu = meter.seconds
                self.record(s, f"ftps_{direction}", size / t / 1e6)
                self.record(s, f"cpu_ftps_{direction}", cpu / (size / GIB))
                word = "upload" if direction == "up" else "download"
                log(f"  {s.label:8} FTPS {word:8} {size / t / 1e6:8.1f} MB/s  cpu {cpu:.2f}s")
                if direction == "down" and out.strip() != str(size):
                    raise BenchError(f"{s.label}: FTPS download received {out.strip()!r} bytes, not {size}")
        for s in servers:
            s.ftps_clear("big")
            s.settle()

    # -- one session, many small files ---------------------------------------------------
    def small_files(self, servers):
        n = self.args.small_files
        for s in servers:
            self.quiet(s)
            t = self.metered(s, "small_up", n, lambda: self.client.run(s, "up", [f"lcd {self.small}", f"cd {s.up_dir}", "put *"]))
            self.record(s, "small_up", n / t)
            log(f"  {s.label:8} {n} × 4 KiB upload   {n / t:8.1f} files/s")
        for s in servers:
            empty_dir(self.dl)
            self.quiet(s)
            t = self.metered(s, "small_down", n, lambda: self.client.run(s, "down", [f"lcd {self.dl}", f"get {s.down_dir}/*"]))
            got = len(os.listdir(self.dl))
            if got != n:
                raise BenchError(f"{s.label}: downloaded {got} of {n} small files")
            self.record(s, "small_down", n / t)
            log(f"  {s.label:8} {n} × 4 KiB download {n / t:8.1f} files/s")
            self.clear_remote(s)
        empty_dir(self.dl)

    # -- many sessions at once -----------------------------------------------------------
    def concurrent_big(self, servers):
        n, size = self.args.concurrent, self.args.concurrent_mib * MIB
        for s in servers:
            self.quiet(s)
            cpu = s.cpu_seconds()
            batches = [[f"put {self.conc_big} {s.up_dir}/conc-{i:02d}.bin"] for i in range(n)]
            with RssSampler(s.pid) as sampler:
                t = self.client.parallel(s, "up", batches)
            cpu = s.cpu_seconds() - cpu
            self.record(s, "conc_big", n * size / t / 1e6)
            self.record(s, "rss_conc", sampler.peak / 1024)
            self.record(s, "cpu_conc", cpu / (n * size / GIB))
            log(f"  {s.label:8} {n} concurrent uploads {n * size / t / 1e6:8.1f} MB/s  peak RSS {sampler.peak / 1024:.1f} MiB ({sampler.samples} samples)")
            self.clear_remote(s)

    def concurrent_small(self, servers):
        n, per = self.args.concurrent, self.args.concurrent_files
        for s in servers:
            self.quiet(s)
            batches = [[f"lcd {d}", f"cd {s.up_dir}", "put *"] for d in self.conc_small]
            t = self.metered(s, "conc_small", n * per, lambda: self.client.parallel(s, "up", batches))
            self.record(s, "conc_small", n * per / t)
            log(f"  {s.label:8} {n} sessions × {per} × 4 KiB upload {n * per / t:8.1f} files/s")
            # Untimed cleanup, one session per uploader (Mailroom acknowledges each file
            # durably; in parallel those commits can share fsyncs).
            self.client.parallel(s, "down", [[f"-rm {s.down_dir}/c{i:02d}-*"] for i in range(n)])
            self.clear_remote(s)

    def idle_sessions(self, servers):
        n = self.args.idle
        for s in servers:
            s.restart()
            self.quiet(s)
            time.sleep(0.5)
            base, base_pss = s.rss_kib(), s.pss_kib()
            driver = Driver(self.python, "idle", "127.0.0.1", s.port, s.up_user, s.up_key, n)
            got = driver.expect("ready", timeout=600)
            if int(got[0]) != n:
                raise BenchError(f"{s.label}: {got[0]} of {n} idle sessions")
            peak = 0
            for _ in range(10):
                peak = max(peak, s.rss_kib())
                time.sleep(0.1)
            pss = s.pss_kib()
            driver.send("close")
            driver.expect("closed", timeout=120)
            driver.finish()
            self.record(s, "rss_idle", peak / 1024)
            self.record(s, "rss_idle_base", base / 1024)
            self.record(s, "rss_per_idle", (peak - base) / n)
            self.record(s, "pss_idle", pss / 1024)
            self.record(s, "pss_per_idle", (pss - base_pss) / n)
            log(f"  {s.label:8} {n} idle sessions: RSS {base / 1024:.1f} → {peak / 1024:.1f} MiB ({(peak - base) / n:.0f} KiB/session), Σ PSS {pss / 1024:.1f} MiB")

    def latency(self, servers):
        n = self.args.latency
        for s in servers:
            self.quiet(s)
            poller = Driver(self.python, "poll", "127.0.0.1", s.port, s.down_user, s.down_key, s.down_dir, SMALL)
            sender = None
            try:
                poller.expect("ready")
                sender = Driver(self.python, "send", "127.0.0.1", s.port, s.up_user, s.up_key, s.up_dir, n, SMALL)
                sender.expect("ready")
                samples = []
                for i in range(n):
                    sender.send("go")
                    name, closed = sender.expect("closed", timeout=60)
                    seen_name, seen = poller.expect("seen", timeout=60)
                    if seen_name != name:
                        raise BenchError(f"{s.label}: poller saw {seen_name}, sender closed {name}")
                    samples.append((float(seen) - float(closed)) * 1000)
                sender.finish()
                sender = None
                poller.finish()
            finally:
                for d in (sender, poller):
                    if d is not None and d.proc.poll() is None:
                        kill_group(d.proc, 0.5)
            clamped = sorted(max(0.0, x) for x in samples)
            p50, p99 = percentile(clamped, 50), percentile(clamped, 99)
            early = sum(1 for x in samples if x < 0)
            self.record(s, "lat_p50", p50)
            self.record(s, "lat_p99", p99)
            self.record(s, "lat_before_close", early)
            log(f"  {s.label:8} delivery latency p50 {p50:.2f} ms p99 {p99:.2f} ms ({early} of {n} listed before close returned)")
            self.clear_remote(s)

    def login(self, servers):
        for s in servers:
            self.quiet(s)
            t = self.client.run(s, "up", ["pwd"])
            self.record(s, "login_ms", t * 1000)
            log(f"  {s.label:8} login + one request {t * 1000:.0f} ms")

    def ceiling(self, data_dir):
        rate = durable_ceiling(os.path.join(data_dir, "bench-fsync-probe"), self.args.fsync_files)
        self.record("machine", "ceiling", rate)
        log(f"  durable-write ceiling {rate:.1f} files/s ({1000 / rate:.2f} ms per durable file)")


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


# ---------------------------------------------------------------------------------------
# machine facts


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ssh_version = run(["ssh", "-V"], check=False)[2].strip()
    mem = status_total_mem()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(mem / GIB, 1) if mem else None,
        "openssh": ssh_version,
    }


def status_total_mem():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None


def filesystem_of(path):
    best, fstype, dev = "", "?", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1].replace("\\040", " ")
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, fstype, dev = mount, parts[2], parts[0]
    except OSError:
        pass
    return f"{fstype} on {dev} (mounted at {best or '?'})"


def openssl_speed(seconds):
    out = {}
    for key, algo in (("aes", "aes-128-gcm"), ("chacha", "chacha20-poly1305")):
        try:
            _, text, _ = run(["openssl", "speed", "-evp", algo, "-bytes", "16384", "-seconds", str(seconds)], timeout=120)
        except BenchError:  # older openssl without -bytes: all block sizes, largest last
            _, text, _ = run(["openssl", "speed", "-evp", algo, "-seconds", str(seconds)], timeout=300)
        rate = None
        for line in text.splitlines():
            tokens = line.split()
            if tokens and tokens[-1].endswith("k") and re.match(r"^[\d.]+k$", tokens[-1]):
                rate = float(tokens[-1][:-1]) * 1000 / 1e6  # 1000s of bytes/s -> MB/s
        out[key] = rate
    return out


def vsftpd_version_of():
    """vsftpd has no --version that exits cleanly (`-v` prints to stdin's descriptor)."""
    try:
        _, out, _ = run(["dpkg-query", "-W", "-f", "${Version}", "vsftpd"], timeout=30)
        return f"vsftpd {out.strip()}"
    except (BenchError, FileNotFoundError):
        return "vsftpd (version unknown)"


def git_commit():
    try:
        _, head, _ = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], timeout=30)
        _, dirty, _ = run(["git", "-C", ROOT, "status", "--porcelain", "--", "crates", "Cargo.toml", "Cargo.lock"], timeout=30)
        return head.strip() + ("+uncommitted changes in crates/" if dirty.strip() else "")
    except BenchError:
        return "unknown"


# ---------------------------------------------------------------------------------------
# report


def rows(a):
    big = f"{a.big_mib // 1024} GiB" if a.big_mib % 1024 == 0 else f"{a.big_mib} MiB"
    out = []
    for direction in ("up", "down"):
        for short in CIPHERS:
            word = "upload" if direction == "up" else "download"
            out.append((f"{direction}_{short}", f"{big} {word}, {SHORT[short]} (MB/s)", "higher"))
    for direction in ("up", "down"):
        for short in CIPHERS:
            word = "upload" if direction == "up" else "download"
            out.append((f"cpu_{direction}_{short}", f"Server CPU s/GiB, {big} {word}, {SHORT[short]}", "lower"))
    out += [
        ("small_up", f"{a.small_files:,} × 4 KiB upload, one session (files/s)", "higher"),
        ("small_down", f"{a.small_files:,} × 4 KiB download, one session (files/s)", "higher"),
        ("conc_small", f"{a.concurrent} sessions × {a.concurrent_files} × 4 KiB upload (aggregate files/s)", "higher"),
        ("small_up_hops_op", "Store hops per file operation, 4 KiB uploads (Mailroom)", "lower"),
        ("small_down_hops_op", "Store hops per file operation, 4 KiB downloads (Mailroom)", "lower"),
        ("conc_small_hops_op", f"Store hops per file operation, {a.concurrent} sessions of 4 KiB uploads (Mailroom)", "lower"),
        ("small_up_hops_file", "Store hops per file, 4 KiB uploads (Mailroom)", "lower"),
        ("small_down_hops_file", "Store hops per file, 4 KiB downloads (Mailroom)", "lower"),
        ("conc_small_commits_file", f"Commits per file, {a.concurrent} sessions of 4 KiB uploads (Mailroom; group commit)", "lower"),
        ("small_up_cpu_ms_file", "Hub CPU per file, 4 KiB uploads (ms, Mailroom)", "lower"),
        ("small_down_cpu_ms_file", "Hub CPU per file, 4 KiB downloads (ms, Mailroom)", "lower"),
        ("conc_small_cpu_ms_file", f"Hub CPU per file, {a.concurrent} sessions of 4 KiB uploads (ms, Mailroom)", "lower"),
        ("small_up_ctx_file", "Hub context switches per file, 4 KiB uploads (Mailroom)", "lower"),
        ("small_down_ctx_file", "Hub context switches per file, 4 KiB downloads (Mailroom)", "lower"),
        ("conc_small_ctx_file", f"Hub context switches per file, {a.concurrent} sessions of 4 KiB uploads (Mailroom)", "lower"),
        ("conc_big", f"{a.concurrent} sessions × {a.concurrent_mib} MiB upload at once (aggregate MB/s)", "higher"),
        ("cpu_conc", f"Server CPU s/GiB, {a.concurrent} concurrent uploads", "lower"),
        ("rss_conc", f"Peak server RSS, {a.concurrent} sessions transferring (MiB)", "lower"),
        ("rss_idle_base", "Server RSS before the idle sessions (MiB)", "lower"),
        ("rss_idle", f"Peak server RSS, {a.idle} idle sessions (MiB)", "lower"),
        ("rss_per_idle", "RSS per idle session over baseline (KiB)", "lower"),
        ("pss_idle", f"Σ PSS, {a.idle} idle sessions (MiB; shared pages split)", "lower"),
        ("pss_per_idle", "Σ PSS per idle session over baseline (KiB)", "lower"),
        ("lat_p50", f"Delivery latency p50, {a.latency} × 4 KiB (ms)", "lower"),
        ("lat_p99", f"Delivery latency p99, {a.latency} × 4 KiB (ms)", "lower"),
        ("login_ms", "Login + one request, one session (ms)", "lower"),
    ]
    out = [(key, label, better, "OpenSSH") for key, label, better in out]
    # FTPS against vsftpd: the "OpenSSH" column holds vsftpd's figure in these rows.
    for direction, word in (("up", "upload"), ("down", "download")):
        out.append((f"ftps_{direction}", f"FTPS {big} {word}, vs vsftpd (MB/s)", "higher", "vsftpd"))
    for direction, word in (("up", "upload"), ("down", "download")):
        out.append((f"cpu_ftps_{direction}", f"FTPS server CPU s/GiB, {big} {word}, vs vsftpd", "lower", "vsftpd"))
    return out


def med(results, label, key):
    values = results.get((label, key))
    return statistics.median(values) if values else None


def fmt(x):
    if x is None:
        return "n/a"
    if x != x:  # nan
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_ratio(r):
    if r is None:
        return "n/a"
    return f"{r:.3f}×" if 0 < abs(r) < 0.1 else fmt(r) + "×"


def ratio(m, o):
    if m is None or o is None or o == 0 or m != m or o != o:
        return None
    return m / o


def targets(results, a):
    m = lambda key: med(results, "Mailroom", key)  # noqa: E731
    o = lambda key: med(results, "OpenSSH", key)  # noqa: E731
    out = []

    def add(name, value, goal, ok, how):
        out.append({"target": name, "measured": value, "goal": goal, "met": ok, "how": how})

    for direction, word in (("up", "upload"), ("down", "download")):
        for short in CIPHERS:
            r = ratio(m(f"{direction}_{short}"), o(f"{direction}_{short}"))
            add(f"Large {word}, {SHORT[short]}: throughput", r, "≥ 1.1× OpenSSH", r is not None and r >= 1.1, "ratio")
    for direction, word in (("up", "upload"), ("down", "download")):
        for short in CIPHERS:
            r = ratio(m(f"cpu_{direction}_{short}"), o(f"cpu_{direction}_{short}"))
            add(f"Large {word}, {SHORT[short]}: server CPU/GiB", r, "≤ 0.7× OpenSSH", r is not None and r <= 0.7, "ratio")
    r = ratio(m("small_up"), o("small_up"))
    add("4 KiB uploads, one session, files/s (durable: close returns after fsync)", r, "≥ 1.0× OpenSSH", r is not None and r >= 1.0, "ratio")
    r = ratio(m("small_up"), med(results, "machine", "ceiling"))
    add("4 KiB uploads, one session, files/s", r, "≥ 0.8× durable-write ceiling", r is not None and r >= 0.8, "ratio to ceiling")
    r = ratio(m("small_down"), o("small_down"))
    add("4 KiB downloads, files/s", r, "≥ 1.0× OpenSSH", r is not None and r >= 1.0, "ratio")
    r = ratio(m("conc_small"), o("conc_small"))
    add(f"4 KiB uploads, {a.concurrent} sessions, aggregate files/s", r, "≥ 1.0× OpenSSH", r is not None and r >= 1.0, "ratio")
    # Each file operation is one unit of work, one hop to the store; the login and the
    # housekeeping (a read every 2 s) add a handful of hops to a whole step.
    hops = [m(k) for k in ("small_up_hops_op", "small_down_hops_op", "conc_small_hops_op")]
    hops = [h for h in hops if h is not None and h == h]
    v = max(hops) if hops else None
    add("Store hops per file operation (worst step)", v, "1 (≤ 1.01 with the login and housekeeping)", v is not None and v <= 1.01, "hops")
    r = ratio(m("lat_p50"), o("lat_p50"))
    add("Delivery latency p50, 4 KiB", r, "≤ 1.0× OpenSSH", r is not None and r <= 1.0, "ratio")
    v = m("rss_per_idle")
    add("RSS per idle session over baseline", v, "≤ 256 KiB", v is not None and v <= 256, "KiB")
    r = ratio(m("conc_big"), o("conc_big"))
    add(f"{a.concurrent} concurrent transfers, aggregate MB/s", r, "≥ 1.0× OpenSSH", r is not None and r >= 1.0, "ratio")
    v = m("lat_p99")
    add("Delivery latency p99, 4 KiB", v, "< 5 ms", v is not None and v < 5, "ms")
    for direction, word in (("up", "upload"), ("down", "download")):
        mv, vv = m(f"ftps_{direction}"), med(results, "vsftpd", f"ftps_{direction}")
        r = ratio(mv, vv)
        add(f"FTPS {word} throughput (issue 5)", r, "≥ 1.0× vsftpd", r is not None and r >= 1.0, "ratio")
        r = ratio(m(f"cpu_ftps_{direction}"), med(results, "vsftpd", f"cpu_ftps_{direction}"))
        add(f"FTPS {word} server CPU/GiB (issue 5)", r, "≤ 1.0× vsftpd", r is not None and r <= 1.0, "ratio")
    return out


def report(res, facts, a):
    lines = []
    lines.append(f"Mailroom {facts['commit']} vs OpenSSH sshd (internal-sftp), {facts['date']}; ssh -V: {facts['machine']['openssh']}")
    lines.append("")
    lines.append(f"{'quick mode, ' if a.quick else ''}{a.rounds} round(s), medians; client: OpenSSH sftp, same cipher for both; MB/s = 10^6 bytes/s")
    vsftpd = facts.get("vsftpd", "n/a")
    lines.append(f"FTPS rows: Mailroom vs vsftpd ({vsftpd}), client curl, TLS 1.2 {FTPS_CIPHER} with {FTPS_CURVE} for both, explicit TLS, passive, TLS on data")
    lines.append("")
    lines.append("| Figure | Mailroom | OpenSSH (FTPS rows: vsftpd) | Ratio | |")
    lines.append("|---|---:|---:|---:|---|")
    for key, label, better, other in rows(a):
        mv, ov = med(res, "Mailroom", key), med(res, other, key)
        r = ratio(mv, ov)
        note = "higher is better" if better == "higher" else "lower is better"
        lines.append(f"| {label} | {fmt(mv)} | {fmt(ov)} | {fmt_ratio(r)} | {note} |")
    ceiling = med(res, "machine", "ceiling")
    if facts.get("ftps_note"):
        lines.append(f"| FTPS against vsftpd | | n/a | | {facts['ftps_note']} |")
    lines.append(f"| Durable-write ceiling of the data folder's file system (files/s) | {fmt(ceiling)} | | | machine |")
    m = facts["machine"]
    sp = facts["openssl"]
    lines.append("")
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, Linux {m['kernel']}; data folder on {facts['filesystem']}")
    lines.append("")
    lines.append(
        f"Physical ceiling (openssl speed -evp, one core, 16 KiB blocks): AES-128-GCM {fmt(sp.get('aes'))} MB/s, ChaCha20-Poly1305 {fmt(sp.get('chacha'))} MB/s"
    )
    lines.append("")
    lines.append("| Target (issues 3 and 12, FTPS: issue 5) | Goal | Measured | Met? |")
    lines.append("|---|---|---:|---|")
    for t in facts["targets"]:
        if t["how"].startswith("ratio"):
            shown = fmt_ratio(t["measured"])
        elif t["how"] == "hops" and t["measured"] is not None:
            shown = f"{t['measured']:.3f} hops"
        else:
            shown = f"{fmt(t['measured'])} {t['how']}"
        lines.append(f"| {t['target']} | {t['goal']} | {shown} | {'met' if t['met'] else 'NOT met'} |")
    if a.rounds > 1:
        lines.append("")
        lines.append("Every round, in run order (one data folder and one sshd for the whole run):")
        lines.append("")
        lines.append("| Figure | Mailroom | OpenSSH (FTPS rows: vsftpd) |")
        lines.append("|---|---:|---:|")
        each = lambda label, key: " / ".join(fmt(v) for v in res.get((label, key), [])) or "n/a"  # noqa: E731
        for key, label, _, other in rows(a):
            lines.append(f"| {label} | {each('Mailroom', key)} | {each(other, key)} |")
        lines.append(f"| Durable-write ceiling (files/s) | {each('machine', 'ceiling')} | |")
    if a.quick:
        lines.append("")
        lines.append("Quick mode: sizes are far too small for the figures to mean anything; this run only proves the harness works.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# main


def build(profile):
    """Builds the hub with `profile` ("release", or "dev" for --debug-build) and returns the
    path of the binary."""
    flags = ["--release"] if profile == "release" else []
    log(f"cargo build {' '.join(flags)} -p mailroom".replace("  ", " "))
    proc = spawn(
        ["cargo", "build", *flags, "-p", "mailroom", "--message-format=json-render-diagnostics"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    binary = None
    out, _ = proc.communicate()
    OWNED.remove(proc)
    for line in out.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["target"]["name"] == "mailroom":
            binary = msg["executable"]
    if proc.returncode != 0 or not binary:
        raise BenchError(f"cargo build ({profile}) -p mailroom failed (exit {proc.returncode})")
    return binary


def parse_args():
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round: proves the harness works (CI)")
    p.add_argument("--rounds", type=int)
    p.add_argument("--big-mib", type=int, help="size of the large file (default 1024)")
    p.add_argument("--small-files", type=int, help="4 KiB files in the one-session test (default 2000)")
    p.add_argument("--idle", type=int, help="idle sessions held at once (default 200)")
    p.add_argument("--concurrent", type=int, help="concurrent sessions (default 32)")
    p.add_argument("--concurrent-mib", type=int, help="MiB each concurrent session uploads (default 32)")
    p.add_argument("--concurrent-files", type=int, help="4 KiB files each concurrent session uploads (default 200)")
    p.add_argument("--latency", type=int, help="deliveries timed for the latency figure (default 500)")
    p.add_argument("--fsync-files", type=int, help="files in the durable-write ceiling probe (default 1000)")
    p.add_argument("--only", help="comma-separated subset: big,ftps,small,concurrent,idle,latency,login,ceiling")
    p.add_argument("--json", metavar="FILE", help="also write the raw numbers (every round) as JSON")
    p.add_argument("--no-build", action="store_true", help="use target/release/mailroom as it is")
    p.add_argument(
        "--debug-build",
        action="store_true",
        help="measure the debug build (only to prove the harness works, as CI's --quick run"
        " does: it shares the test suite's build instead of compiling everything again)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp folder (logs, data) for inspection")
    p.add_argument("--from-json", metavar="FILE", help="print the table of an earlier run's --json file and exit")
    a = p.parse_args()
    if a.from_json:
        return a
    full = dict(rounds=3, big_mib=1024, small_files=2000, idle=200, concurrent=32, concurrent_mib=32, concurrent_files=200, latency=500, fsync_files=1000)
    quick = dict(rounds=1, big_mib=8, small_files=50, idle=10, concurrent=4, concurrent_mib=4, concurrent_files=20, latency=20, fsync_files=50)
    for key, value in (quick if a.quick else full).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    return a


def reprint(path):
    with open(path) as f:
        saved = json.load(f)
    a = argparse.Namespace(**saved["params"])
    results = {tuple(k.split("/", 1)): v for k, v in saved["rounds"].items()}
    print(report(results, saved, a))


def print_log_tails(tmp, names, size=3000):
    """Prints the last `size` characters of each log `names` (relative to `tmp`) that exists
    and says something, on standard error: what the servers said before a failed run's
    folder goes."""
    for name in names:
        path = os.path.join(tmp, name)
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                tail = f.read()[-size:]
            if tail.strip():
                print(f"--- last lines of {name}:\n{tail}", file=sys.stderr)


def main():
    a = parse_args()
    if a.from_json:
        reprint(a.from_json)
        return
    steps = ["login", "big", "ftps", "small", "concurrent", "idle", "latency", "ceiling"]
    only = set(a.only.split(",")) if a.only else set(steps)
    unknown = only - set(steps)
    if unknown:
        raise BenchError(f"unknown --only step(s): {', '.join(sorted(unknown))}")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started with SIGINT ignored (a background job)
    for tool in ("sftp", "ssh-keygen", "ssh", "openssl", "cargo"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed")

    commit = git_commit()  # before the build: what the binary is built from
    if a.no_build:
        binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "mailroom")
        if not os.path.exists(binary):
            raise BenchError(f"--no-build: {binary} does not exist")
    else:
        binary = build("dev" if a.debug_build else "release")

    tmp = tempfile.mkdtemp(prefix="mailroom-bench-")
    log(f"temp folder {tmp}")
    ok = False
    try:
        os.makedirs(os.path.join(tmp, "keys"))
        keygen(os.path.join(tmp, "keys", "alice"), "alice")
        keygen(os.path.join(tmp, "keys", "bob"), "bob")
        hub = Mailroom(binary, tmp, ftps="ftps" in only)
        sshd = OpenSSH(tmp, hub.alice_key, hub.bob_key)
        hub.start()
        sshd.start()
        servers = [hub, sshd]
        # vsftpd is only the FTPS step's yardstick: if it cannot start, its figures are n/a
        # (with the reason under the table) and the run goes on; Mailroom's FTPS figures are
        # still measured.
        ftps_servers, ftps_note, vsftpd_version = [hub], None, "n/a"
        if "ftps" in only and not shutil.which("curl"):
            only.discard("ftps")
            ftps_note = "FTPS step skipped: curl is not installed"
            log(ftps_note)
        if "ftps" in only:
            try:
                vsftpd = Vsftpd(tmp)
                vsftpd.start()
                ftps_servers.append(vsftpd)
                vsftpd_version = vsftpd_version_of()
            except BenchError as exc:
                ftps_note = f"vsftpd unavailable: {exc}".replace("\n", " ").replace("|", "/")[:300]
                log(ftps_note)
        bench = Bench(a, tmp, sys.executable)
        bench.prepare_files()

        log("openssl speed (single core)")
        speed = openssl_speed(1 if a.quick else 3)
        for r in range(a.rounds):
            log(f"round {r + 1} of {a.rounds}")
            # Idle sessions first, on freshly restarted servers (see idle_sessions).
            if "idle" in only:
                bench.idle_sessions(servers)
            if "login" in only:
                bench.login(servers)
            if "big" in only:
                bench.big_files(servers)
            if "ftps" in only:
                bench.ftps(ftps_servers)
            # The ceiling right before the small uploads it is the yardstick for: the disk's
            # fsync latency drifts on a shared VM.
            if "ceiling" in only:
                bench.quiet(hub)
                bench.ceiling(os.path.dirname(hub.data))
            if "small" in only:
                bench.small_files(servers)
            if "concurrent" in only:
                bench.concurrent_big(servers)
                bench.concurrent_small(servers)
            if "latency" in only:
                bench.latency(servers)
        for s in servers + ftps_servers[1:]:
            if s.proc.poll() is not None:
                raise BenchError(f"{s.label} exited during the run; see {s.log_path}")

        facts = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit,
            "machine": machine(),
            "filesystem": filesystem_of(os.path.realpath(hub.data)),
            "openssl": speed,
            "vsftpd": vsftpd_version,
            "ftps_note": ftps_note,
        }
        facts["targets"] = targets(bench.results, a)
        print(report(bench.results, facts, a), flush=True)
        if a.json:
            raw = {f"{label}/{key}": values for (label, key), values in sorted(bench.results.items())}
            medians = {f"{label}/{key}": statistics.median(values) for (label, key), values in sorted(bench.results.items())}
            with open(a.json, "w") as f:
                json.dump({"params": vars(a), **facts, "medians": medians, "rounds": raw}, f, indent=2)
            log(f"raw numbers written to {a.json}")
        ok = True
    finally:
        kill_all()
        if not ok:
            # Show what the servers said before the folder goes.
            print_log_tails(tmp, ("mailroom.log", "sshd/sshd.log", "vsftpd/vsftpd.log"))
        if a.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        print(f"bench/run: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        print(f"bench/run: interrupted ({exc})", file=sys.stderr)
        sys.exit(130)
