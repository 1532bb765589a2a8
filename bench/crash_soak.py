#!/usr/bin/env python3
"""Crash soak: N cycles of `kill -9` of a hub under a mixed load, on one data folder.

Each cycle starts `mailroom serve` on the same data folder (SFTP, FTPS and HTTPS on loopback),
checks what the previous cycles left, then drives a mix at once:

  - SFTP uploads with paramiko to /outbox/bob, some of them then renamed in the outbox
    (posix-rename) and some recalled (removed from the outbox before pick-up);
  - SFTP uploads to the group `team` (bob, carol, dave): a fan-out;
  - FTPS uploads with curl --ssl-reqd (an upload counts once curl saw 226);
  - HTTPS API uploads: the one-request PUT /outbox/{target}/{name}?sha256= and the resumable
    create, PATCH, finish;
  - a [[rules]] webhook on every delivery to an unreachable loopback port, so jobs queue;

and SIGKILLs the hub after a random delay drawn from a seeded RNG (printed, with the cycle's
seed: `--seed S` replays the same delays and the same mix). After the restart it checks,
against the state kept over all cycles:

  - every upload whose client got an acknowledgement (SFTP close OK, FTPS 226, HTTP 2xx on
    PUT or finish) is in its recipients' inboxes, unless a recall of it was acknowledged;
    an upload that was never acknowledged may be there or not, and from that check on it
    must stay as found;
  - nothing else is visible: every inbox entry has the size and SHA-256 of a file that was
    sent, and each file new since the last check is downloaded and hashed (no partial file);
  - an acknowledged rename shows the new name; an acknowledged recall leaves no delivery;
  - a fan-out is all or nothing: every member of the group has it, or none;
  - `mailroom fsck` exits 0, `mailroom audit verify` exits 0, and no job is lost (the count
    of jobs never falls).

It prints one line per cycle and the totals; `--json FILE` writes them. It exits 1 on any
failed check, naming the cycle, its seed and its delay. Standard library and paramiko only.
"""

import argparse
import hashlib
import http.client
import json
import logging
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import paramiko

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMBERS = ("bob", "carol", "dave")
INLINE = 64 * 1024


def log(message):
    print(f"[crash soak] {message}", file=sys.stderr, flush=True)


def run(args, env=None, input=None, timeout=600, check=True):
    done = subprocess.run(args, env=env, input=input, capture_output=True, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({done.returncode}): "
                         f"{done.stdout.decode()} {done.stderr.decode()}")
    return done


class Hub:
    """One data folder, served again and again (the style of bench/agent.py's Hub)."""

    def __init__(self, binary, tmp, seed):
        self.binary = binary
        self.tmp = tmp
        self.data = os.path.join(tmp, "data")
        first = 20000 + random.Random(seed).randrange(0, 40000)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
        self.env.update(
            MAILROOM_DATA=self.data,
            MAILROOM_LOG="warn",
            MAILROOM_SFTP_LISTEN="127.0.0.1:0",
            MAILROOM_HTTPS_LISTEN="127.0.0.1:0",
            MAILROOM_HTTPS_LOGIN_ATTEMPTS_PER_MINUTE="100000",
            MAILROOM_FTPS_ENABLED="true",
            MAILROOM_FTPS_LISTEN="127.0.0.1:0",
            MAILROOM_FTPS_PASSIVE_PORTS=f"{first}-{first + 63}",
        )
        self.password = "Soak-" + os.urandom(9).hex()
        self.keys = os.path.join(tmp, "keys")
        os.makedirs(self.keys)
        self.proc = None
        self.starts = 0

    def admin(self, *args, check=True, input=None):
        return run([self.binary, *args], env=self.env, input=input, check=check)

    def setup(self):
        self.admin("init")
        for name in ("alice",) + MEMBERS:
            key = os.path.join(self.keys, name)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
            self.admin("account", "add", name, "--password-stdin", "--authorized-key", key + ".pub",
                       input=(self.password + "\n").encode())
        self.admin("group", "add", "team")
        for name in MEMBERS:
            self.admin("group", "member", "add", "team", name)
        self.admin("route", "allow", "alice", "bob")
        self.admin("route", "allow", "alice", "team")
        # Every delivery queues a webhook job to a loopback port where nothing listens: the
        # jobs fail, back off and stay in the queue across the kills.
        config = os.path.join(self.data, "mailroom.toml")
        text = open(config).read()
        if "\n[webhooks]\n" not in text:
            raise SystemExit("mailroom.toml has no [webhooks] section to extend")
        text = text.replace("\n[webhooks]\n", '\n[webhooks]\nallow_networks = ["127.0.0.1"]\n', 1)
        text += ('\n[[rules]]\nname = "soak-unreachable"\non = ["delivery.delivered"]\n'
                 'webhook = ["https://127.0.0.1:9/soak"]\n')
        with open(config, "w") as f:
            f.write(text)

    def start(self, out):
        self.out = out
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=open(out, "wb"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + 120
        ports = {}
        while time.monotonic() < deadline and len(ports) < 3:
            text = open(out, errors="replace").read()
            for proto in ("sftp", "https", "ftps"):
                found = re.search(rf"mailroom: {proto} listening on 127\.0\.0\.1:(\d+)", text)
                if found:
                    ports[proto] = int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if len(ports) < 3:
            self.proc.kill()
            raise SystemExit(f"the hub did not start: {open(out, errors='replace').read()}")
        self.sftp, self.https, self.ftps = ports["sftp"], ports["https"], ports["ftps"]
        self.ca = os.path.join(self.data, "tls", "server-ca.crt")
        self.ssl = ssl.create_default_context(cafile=self.ca)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)

    def api(self, method, path, body=None, token=None, headers=None, timeout=60):
        """One HTTPS request; (status, body bytes)."""
        conn = http.client.HTTPSConnection("localhost", self.https, context=self.ssl, timeout=timeout)
        try:
            h = dict(headers or {})
            if token:
                h["Authorization"] = f"Bearer {token}"
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=h)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def token(self, user):
        status, body = self.api("POST", "/api/v1/token", {"username": user, "password": self.password})
        if status != 200:
            raise RuntimeError(f"token for {user}: {status} {body[:300]!r}")
        return json.loads(body)["access_token"]


class Item:
    """One file sent: who should have it, under which names, and whether it was acknowledged."""

    def __init__(self, cycle, via, target, name, data):
        self.cycle, self.via, self.target, self.name = cycle, via, target, name
        self.size = len(data)
        self.sha = hashlib.sha256(data).hexdigest()
        self.recipients = MEMBERS if target == "team" else (target,)
        self.acked = False          # the client saw the acknowledgement
        self.known = None           # after a check: True (present) or False (absent), for good
        self.names = {name}         # names it may show
        self.renamed_to = None      # a rename acknowledged: the only name it may show
        self.recall = None          # None, "sent" (no answer seen) or "acked"
        self.verified = False       # its content was downloaded and hashed


class Load:
    """The concurrent mix of one cycle; every thread stops at the first error after the kill."""

    def __init__(self, hub, cycle, rng, items, errors):
        self.hub, self.cycle, self.rng, self.items, self.errors = hub, cycle, rng, items, errors
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.tmp = os.path.join(hub.tmp, f"files-{cycle}")
        os.makedirs(self.tmp, exist_ok=True)
        # Each thread draws from its own RNG, seeded from the cycle's: the same files each replay.
        self.seeds = {w: rng.randrange(2**63) for w in ("sftp", "fan", "ftps", "https")}

    def new_item(self, rng, via, target, n):
        # A fifth are blob files, the rest small enough to be kept inline in the metadata.
        large = rng.random() < 0.2
        size = rng.randrange(INLINE + 1, 400_000) if large else rng.randrange(1, INLINE)
        data = rng.randbytes(size)
        item = Item(self.cycle, via, target, f"c{self.cycle:04d}-{via}-{n:03d}.bin", data)
        with self.lock:
            self.items.append(item)
        return item, data

    def guard(self, name, body):
        try:
            body()
        except Exception as exc:  # after the kill every client fails: that is the point
            if not self.stop.is_set():
                with self.lock:
                    self.errors.append(f"{name}: failed before the kill: {type(exc).__name__}: {exc}")

    def sftp_session(self):
        transport = paramiko.Transport(("127.0.0.1", self.hub.sftp))
        transport.connect(username="alice",
                          pkey=paramiko.Ed25519Key.from_private_key_file(os.path.join(self.hub.keys, "alice")))
        return transport, paramiko.SFTPClient.from_transport(transport)

    def sftp_direct(self):
        rng = random.Random(self.seeds["sftp"])
        transport, sftp = self.sftp_session()
        try:
            n = 0
            mine = []
            while not self.stop.is_set():
                item, data = self.new_item(rng, "sftp", "bob", n)
                n += 1
                with sftp.open(f"/outbox/bob/{item.name}", "wb") as remote:
                    remote.set_pipelined(True)
                    remote.write(data)
                item.acked = True  # the close returned OK
                mine.append(item)
                roll = rng.random()
                if roll < 0.25 and mine:
                    target = mine.pop(rng.randrange(len(mine)))
                    new = target.name.replace(".bin", "-renamed.bin")
                    target.names.add(new)
                    sftp.posix_rename(f"/outbox/bob/{target.name}", f"/outbox/bob/{new}")
                    target.renamed_to = new
                elif roll < 0.45 and mine:
                    target = mine.pop(rng.randrange(len(mine)))
                    name = target.renamed_to or target.name
                    target.recall = "sent"
                    sftp.remove(f"/outbox/bob/{name}")
                    target.recall = "acked"
        finally:
            transport.close()

    def sftp_fanout(self):
        rng = random.Random(self.seeds["fan"])
        transport, sftp = self.sftp_session()
        try:
            n = 0
            while not self.stop.is_set():
                item, data = self.new_item(rng, "fan", "team", n)
                n += 1
                with sftp.open(f"/outbox/team/{item.name}", "wb") as remote:
                    remote.set_pipelined(True)
                    remote.write(data)
                item.acked = True
        finally:
            transport.close()

    def ftps(self):
        rng = random.Random(self.seeds["ftps"])
        n = 0
        while not self.stop.is_set():
            target = "team" if rng.random() < 0.2 else "bob"
            item, data = self.new_item(rng, "ftps", target, n)
            n += 1
            local = os.path.join(self.tmp, item.name)
            with open(local, "wb") as f:
                f.write(data)
            done = subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert", self.hub.ca,
                                   "--user", f"alice:{self.hub.password}", "-T", local,
                                   f"ftp://localhost:{self.hub.ftps}/outbox/{target}/{item.name}"],
                                  capture_output=True, timeout=120)
            os.remove(local)
            if done.returncode != 0:
                raise RuntimeError(f"curl ftps ({done.returncode}): {done.stderr.decode().strip()}")
            item.acked = True  # curl exits 0 only after the 226

    def https(self):
        rng = random.Random(self.seeds["https"])
        token = self.hub.token("alice")
        n = 0
        while not self.stop.is_set():
            target = "team" if rng.random() < 0.2 else "bob"
            resumable = rng.random() < 0.5
            item, data = self.new_item(rng, "api" if resumable else "put", target, n)
            n += 1
            if resumable:
                status, body = self.hub.api("POST", "/api/v1/uploads",
                                            {"recipients": [target], "name": item.name, "size": item.size}, token)
                if status // 100 != 2:
                    raise RuntimeError(f"create: {status} {body[:300]!r}")
                upload = json.loads(body)["id"]
                status, body = self.hub.api("PATCH", f"/api/v1/uploads/{upload}", data, token,
                                            {"Upload-Offset": "0",
                                             "Content-Type": "application/offset+octet-stream"})
                if status // 100 != 2:
                    raise RuntimeError(f"patch: {status} {body[:300]!r}")
                status, body = self.hub.api("POST", f"/api/v1/uploads/{upload}/finish", {"sha256": item.sha}, token)
            else:
                status, body = self.hub.api("PUT", f"/api/v1/outbox/{target}/{item.name}?sha256={item.sha}",
                                            data, token, {"Content-Type": "application/octet-stream"})
            if status // 100 != 2:
                raise RuntimeError(f"{item.via} {item.name}: {status} {body[:300]!r}")
            item.acked = True

    def run(self, delay):
        threads = [threading.Thread(target=self.guard, args=(name, body), daemon=True)
                   for name, body in (("sftp", self.sftp_direct), ("fan-out", self.sftp_fanout),
                                      ("ftps", self.ftps), ("https", self.https))]
        for t in threads:
            t.start()
        # The chaos itself, not a synchronisation: the kill lands wherever the delay falls.
        time.sleep(delay)
        self.stop.set()
        self.hub.kill()
        for t in threads:
            t.join(timeout=180)
            if t.is_alive():
                self.errors.append("a client thread hung after the kill")
        shutil.rmtree(self.tmp, ignore_errors=True)


def check(hub, items, jobs_before, verify_content=True):
    """The checks after a restart; returns (failures, facts)."""
    failures = []
    by_sha = {}
    for item in items:
        by_sha.setdefault(item.sha, []).append(item)
    seen = {}  # id(item) -> {recipient: (name, delivery id)}
    tokens = {}
    for user in MEMBERS:
        tokens[user] = hub.token(user)
        status, body = hub.api("GET", "/api/v1/inbox", token=tokens[user])
        if status != 200:
            failures.append(f"inbox of {user}: {status} {body[:200]!r}")
            continue
        for entry in json.loads(body):
            matches = [i for i in by_sha.get(entry["sha256"], []) if i.size == entry["size"]
                       and user in i.recipients]
            if not matches:
                failures.append(f"{user} sees {entry['sender']}/{entry['name']} ({entry['size']} bytes, "
                                f"{entry['state']}): not a file that was sent whole (a partial?)")
                continue
            item = matches[0]
            seen.setdefault(id(item), {})[user] = (entry["name"], entry["id"])
            if entry["name"] not in item.names:
                failures.append(f"{user} sees {item.name} as {entry['name']}")
            if item.renamed_to and entry["name"] != item.renamed_to:
                failures.append(f"{user} sees {entry['name']}: the acknowledged rename to {item.renamed_to} is lost")
    counts = {"present": 0, "verified_now": 0}
    for item in items:
        have = seen.get(id(item), {})
        where = f"{item.via} {item.name} (cycle {item.cycle}, to {item.target})"
        if have and set(have) != set(item.recipients):
            failures.append(f"{where}: fan-out is partial: only {sorted(have)} of {list(item.recipients)}")
        if item.recall == "acked":
            if have:
                failures.append(f"{where}: recall was acknowledged but {sorted(have)} still have it")
        elif item.known is False and have:
            failures.append(f"{where}: was absent at an earlier check, now visible")
        elif (item.acked or item.known) and item.recall is None and not have:
            failures.append(f"{where}: acknowledged{' and seen' if item.known else ''} but lost "
                            f"(recipients see nothing)")
        item.known = bool(have)
        if have:
            counts["present"] += 1
            names = {n for n, _ in have.values()}
            item.names = names  # from now on it must keep the name it shows
            if verify_content and not item.verified:
                for user, (name, delivery) in have.items():
                    status, body = hub.api("GET", f"/api/v1/inbox/{delivery}/content", token=tokens[user])
                    if status != 200 or len(body) != item.size or hashlib.sha256(body).hexdigest() != item.sha:
                        failures.append(f"{where}: {user}'s download is not what was sent "
                                        f"({status}, {len(body)} of {item.size} bytes)")
                item.verified = True
                counts["verified_now"] += 1
        if item.recall == "sent":
            item.recall = None if have else "acked"  # settled by what the check saw
    fsck = hub.admin("--json", "fsck", check=False)
    if fsck.returncode != 0:
        failures.append(f"fsck exit {fsck.returncode}: {fsck.stdout.decode()[:2000]} {fsck.stderr.decode()[:500]}")
    audit = hub.admin("audit", "verify", check=False)
    if audit.returncode != 0:
        failures.append(f"audit verify exit {audit.returncode}: {audit.stdout.decode()} {audit.stderr.decode()}")
    jobs_text = hub.admin("jobs", "list", "--limit", "1").stdout.decode()
    totals = re.search(r"queued (\d+), done (\d+), dead (\d+), dropped (\d+)", jobs_text)
    if not totals:
        failures.append(f"jobs list gave no totals: {jobs_text[-300:]}")
        jobs = {"queued": 0, "done": 0, "dead": 0, "dropped": 0}
    else:
        jobs = dict(zip(("queued", "done", "dead", "dropped"), map(int, totals.groups())))
    if sum(jobs.values()) < jobs_before:
        failures.append(f"jobs were lost: {sum(jobs.values())} now, {jobs_before} before")
    return failures, counts, jobs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=100, help="kill -9 cycles (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="the run's seed (default: random, printed)")
    parser.add_argument("--min-delay", type=float, default=0.3, help="shortest delay before the kill, s (0.3)")
    parser.add_argument("--max-delay", type=float, default=3.0, help="longest delay before the kill, s (3.0)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--binary", help="a built mailroom binary (default: cargo build --release)")
    parser.add_argument("--debug-build", action="store_true", help="build and use the debug binary (CI)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder (printed)")
    args = parser.parse_args()
    # paramiko logs every connection the kill resets; the checks say what matters.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    if args.binary:
        binary = os.path.abspath(args.binary)
    else:
        profile = [] if args.debug_build else ["--release"]
        log(f"cargo build {' '.join(profile)} -p mailroom")
        run(["cargo", "build", *profile, "-p", "mailroom"], timeout=7200)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        binary = os.path.join(target, "debug" if args.debug_build else "release", "mailroom")
    log(f"seed {seed} (replay: bench/crash-soak --seed {seed} --cycles {args.cycles})")
    tmp = tempfile.mkdtemp(prefix="mailroom-crash-soak-")
    hub = Hub(binary, tmp, seed)
    rng = random.Random(seed)
    items, rows, failed = [], [], []
    jobs = {"queued": 0, "done": 0, "dead": 0, "dropped": 0}
    started = time.monotonic()
    try:
        hub.setup()
        for cycle in range(1, args.cycles + 2):
            t0 = time.monotonic()
            hub.start(os.path.join(tmp, f"serve-{cycle}.out"))
            failures, counts, jobs = check(hub, items, sum(jobs.values()))
            if cycle > 1:
                row = rows[-1]
                row.update(present=counts["present"], verified=counts["verified_now"], jobs=dict(jobs),
                           failures=failures, check_s=time.monotonic() - t0)
                state = "ok" if not failures else "FAILED"
                print(f"cycle {row['cycle']:4d}  seed {row['seed']:20d}  kill after {row['delay']:.2f}s  "
                      f"acked {row['acked']:3d}/{row['sent']:3d}  {row['acked_bytes'] / 2**20:6.1f} MiB  "
                      f"renames {row['renames']}  recalls {row['recalls']}  visible {counts['present']:5d}  "
                      f"jobs q{jobs['queued']}/d{jobs['dead']}  {row['load_s'] + row['check_s']:5.1f}s  {state}",
                      flush=True)
                for failure in failures:
                    print(f"    FAIL: {failure}", flush=True)
                if failures:
                    failed.append({"cycle": row["cycle"], "seed": row["seed"], "delay": row["delay"],
                                   "failures": failures})
            elif failures:
                raise SystemExit(f"the fresh hub fails its checks: {failures}")
            if cycle > args.cycles:
                hub.stop()
                break
            cycle_seed = rng.randrange(2**63)
            crng = random.Random(cycle_seed)
            delay = crng.uniform(args.min_delay, args.max_delay)
            errors = []
            before = len(items)
            load = Load(hub, cycle, crng, items, errors)
            t1 = time.monotonic()
            load.run(delay)
            new = items[before:]
            acked = [i for i in new if i.acked]
            rows.append({"cycle": cycle, "seed": cycle_seed, "delay": delay, "sent": len(new),
                         "acked": len(acked), "acked_bytes": sum(i.size for i in acked),
                         "renames": sum(1 for i in new if i.renamed_to),
                         "recalls": sum(1 for i in new if i.recall == "acked"),
                         "start_s": t1 - t0, "load_s": time.monotonic() - t1, "client_errors": errors})
            if errors:
                # A client failing while the hub was alive is a failure of its own.
                for e in errors:
                    print(f"    FAIL (cycle {cycle}): {e}", flush=True)
                failed.append({"cycle": cycle, "seed": cycle_seed, "delay": delay, "failures": errors})
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.proc.kill()
            hub.proc.wait()
        if args.keep or failed:
            log(f"data folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total_s = time.monotonic() - started
    done = [r for r in rows if "present" in r]
    totals = {
        "seed": seed, "cycles": len(done), "restarts": hub.starts - 1, "kills": len(rows),
        "uploads_sent": sum(r["sent"] for r in rows), "uploads_acked": sum(r["acked"] for r in rows),
        "acked_bytes": sum(r["acked_bytes"] for r in rows),
        "renames_acked": sum(r["renames"] for r in rows), "recalls_acked": sum(r["recalls"] for r in rows),
        "visible_at_end": done[-1]["present"] if done else 0,
        "downloads_verified": sum(r["verified"] for r in done), "jobs_at_end": jobs,
        "seconds": total_s, "seconds_per_cycle": total_s / max(len(rows), 1), "failures": failed,
    }
    print(f"totals: {totals['cycles']} cycles, {totals['kills']} kill -9, {totals['restarts']} restarts; "
          f"{totals['uploads_acked']} of {totals['uploads_sent']} uploads acknowledged "
          f"({totals['acked_bytes'] / 2**20:.1f} MiB), {totals['renames_acked']} renames, "
          f"{totals['recalls_acked']} recalls; {totals['visible_at_end']} files visible at the end, "
          f"{totals['downloads_verified']} downloaded and hashed; jobs {jobs}; "
          f"{total_s:.0f} s ({totals['seconds_per_cycle']:.1f} s per cycle); "
          f"{len(failed)} failed cycles", flush=True)
    for f in failed:
        print(f"failed: cycle {f['cycle']} seed {f['seed']} delay {f['delay']:.2f}s: {f['failures'][0]}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"totals": totals, "cycles": rows}, out, indent=2)
    if failed or len(done) != args.cycles:
        sys.exit(1)


if __name__ == "__main__":
    main()
