#!/usr/bin/env python3
"""Drives Python paramiko against a Mailroom hub for the Rust tests.

Each subcommand prints one JSON object on stdout and exits 0; the Rust test asserts on it.
Subcommands:
  login  HOST PORT USER (--password PW | --key FILE)     -> {"ok", "error", "seconds"}
      [--code CODE] answers the keyboard-interactive prompt after the password (TOTP);
      [--bind ADDR] connects from the local address ADDR (e.g. 127.0.0.2), for defender tests
  put    HOST PORT USER --key FILE LOCAL REMOTE          -> {"ok", "error"}
  get    HOST PORT USER --key FILE REMOTE LOCAL          -> {"ok", "error"}
  ranges HOST PORT USER --key FILE REMOTE OFFSET:LEN...  -> {"ok", "error", "sha256": [...]}
      reads each range of REMOTE with a seek and one read, and hashes what came back
  write  HOST PORT USER --key FILE LOCAL REMOTE          -> {"ok", "error", "written"}
      like put, but each 32 KiB write waits for its status, so a refused write raises with
      the server's message (put pipelines its writes, and paramiko ignores errors on close)
  hostile HOST PORT USER --key FILE                      -> {"results": [{"op","path","ok","errno","error"}], "alive"}
  put-many HOST PORT USER --key FILE REMOTE_DIR LOCAL... -> one {"done": NAME} line per upload
      whose close was acknowledged, printed and flushed at once (for crash tests), then
      {"finished": true} or {"error": ...}
  mfa    HOST PORT USER [--key FILE] [--password PW] [--code CODE]
      -> {"ok", "error", "steps": [{"method", "remaining"}], "prompts"}
      proves the key, then either the password alone or, with --code, one keyboard-interactive
      login answering "code" prompts with CODE and others with PW
  fresh-listing HOST PORT USER --key FILE SENDER SENDER_KEY FOLDER FILE_PATH
      -> {"names", "file_opendir_error"}
      as USER opens FOLDER, then as SENDER uploads 4 bytes to FILE_PATH, then reads the
      folder's entries through the handle opened before the upload; also tries to open the
      uploaded file as a folder
  timing HOST PORT USER (--password PW | --key FILE) N OTHER_USER
      -> {"a": [{"seconds", "result"}], "b": [...]}
      N interleaved pairs of refused logins as USER (a) and OTHER_USER (b), timing only the
      authentication request (the handshake before it is not measured)
"""
import argparse
import hashlib
import json
import socket
import sys
import threading
import time

import paramiko


def connect(args):
    transport = client_transport(args)
    if args.password is not None:
        transport.auth_password(args.user, args.password)
    else:
        key = paramiko.Ed25519Key.from_private_key_file(args.key)
        transport.auth_publickey(args.user, key)
    if args.code is not None and not transport.is_authenticated():
        second_factor(transport, args.user, args.code)
    return transport


def second_factor(transport, user, code):
    """Answers the server's keyboard-interactive prompt with `code` after a partial success.

    paramiko's own auth_interactive first sends a second "ssh-userauth" service request;
    russh 0.65 ignores a service request once authentication has begun, so that call waits
    for its timeout. Like OpenSSH, this sends only the userauth request.
    """
    event = threading.Event()
    handler = paramiko.auth_handler.AuthHandler(transport)
    with transport.lock:
        transport.auth_handler = handler
        handler.auth_event = event
        handler.auth_method = "keyboard-interactive"
        handler.username = user
        handler.interactive_handler = lambda title, instructions, prompts: [code] * len(prompts)
        handler.submethods = ""
        accept = paramiko.Message()
        accept.add_string("ssh-userauth")
        accept.rewind()
        handler._parse_service_accept(accept)
    handler.wait_for_response(event)


def cmd_login(args):
    start = time.monotonic()
    try:
        transport = connect(args)
        ok = transport.is_authenticated()
        error = None
        if ok:
            sftp = paramiko.SFTPClient.from_transport(transport)
            sftp.listdir("/")
            sftp.close()
        transport.close()
    except Exception as exc:  # the test asserts on the message
        ok, error = False, f"{type(exc).__name__}: {exc}"
    return {"ok": ok, "error": error, "seconds": time.monotonic() - start}


def cmd_put(args):
    transport = connect(args)
    sftp = paramiko.SFTPClient.from_transport(transport)
    try:
        sftp.put(args.local, args.remote, confirm=False)
        return {"ok": True, "error": None}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        transport.close()


def cmd_write(args):
    transport = connect(args)
    sftp = paramiko.SFTPClient.from_transport(transport)
    written = 0
    try:
        with open(args.local, "rb") as local, sftp.open(args.remote, "wb") as remote:
            while True:
                chunk = local.read(32768)
                if not chunk:
                    break
                remote.write(chunk)
                remote.flush()
                written += len(chunk)
        return {"ok": True, "error": None, "written": written}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "written": written}
    finally:
        transport.close()


def cmd_get(args):
    transport = connect(args)
    sftp = paramiko.SFTPClient.from_transport(transport)
    try:
        sftp.get(args.remote, args.local)
        return {"ok": True, "error": None}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        transport.close()


def cmd_ranges(args):
    transport = connect(args)
    sftp = paramiko.SFTPClient.from_transport(transport)
    try:
        sums = []
        with sftp.open(args.rest[0], "rb") as remote:
            for spec in args.rest[1:]:
                offset, length = (int(part) for part in spec.split(":"))
                remote.seek(offset)
                data = b""
                while len(data) < length:
                    more = remote.read(length - len(data))
                    if not more:
                        break
                    data += more
                sums.append(hashlib.sha256(data).hexdigest())
        return {"ok": True, "error": None, "sha256": sums}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "sha256": []}
    finally:
        transport.close()


HOSTILE = [
    "/outbox/bob/../../../../etc/passwd",
    "../../etc/passwd",
    "/etc/passwd",
    "/outbox/bob/a\x00b.txt",
    "/outbox/bob/line\nbreak.txt",
    "/outbox/bob/tab\tname.txt",
    "/outbox/bob/evil\u202etxt.exe",
    "/outbox/bob/zero\u200bwidth.txt",
    "/outbox/bob/cafe\u0301.txt",
    "/outbox/bob/" + "x" * 300,
    "/outbox/" + "d/" * 600 + "f",
    "/outbox/bob/back\\slash.txt",
    "/outbox/bob/sub/dir.txt",
    "/outbox/Bob/upper.txt",
    "/inbox/bob/write-into-inbox.txt",
    "/sent/bob/forged.txt",
    "/outbox/bob/ trailing.txt",
]


def cmd_hostile(args):
    transport = connect(args)
    sftp = paramiko.SFTPClient.from_transport(transport)
    results = []

    def attempt(op, path, fn):
        try:
            fn()
            results.append({"op": op, "path": repr(path), "ok": True, "errno": None, "error": None})
        except IOError as exc:
            results.append({"op": op, "path": repr(path), "ok": False,
                            "errno": getattr(exc, "errno", None), "error": str(exc)})
        except Exception as exc:
            results.append({"op": op, "path": repr(path), "ok": False, "errno": None,
                            "error": f"{type(exc).__name__}: {exc}"})

    for path in HOSTILE:
        def put(path=path):
            with sftp.open(path, "wb") as f:
                f.write(b"hostile content\n")
        attempt("write", path, put)
    for path in ["/outbox/bob/../../../../etc/passwd", "/etc/shadow", "../../../../root"]:
        attempt("read", path, lambda path=path: sftp.open(path, "rb").read())
        attempt("listdir", path, lambda path=path: sftp.listdir(path))
    attempt("mkdir", "/outbox/bob/newdir", lambda: sftp.mkdir("/outbox/bob/newdir"))
    attempt("mkdir", "/newtop", lambda: sftp.mkdir("/newtop"))
    attempt("rmdir", "/inbox", lambda: sftp.rmdir("/inbox"))
    attempt("symlink", "/outbox/bob/link", lambda: sftp.symlink("/etc/passwd", "/outbox/bob/link"))
    attempt("rename", "/outbox/bob/x -> /inbox/x", lambda: sftp.rename("/outbox/bob/x", "/inbox/alice/x"))
    attempt("remove", "/inbox", lambda: sftp.remove("/inbox"))
    # Raw bytes that are not UTF-8, bypassing paramiko's encoding.
    def raw_open():
        t, msg = sftp._request(paramiko.sftp.CMD_OPEN, b"/outbox/bob/\xff\xfe.txt",
                               paramiko.sftp.SFTP_FLAG_WRITE | paramiko.sftp.SFTP_FLAG_CREATE,
                               paramiko.SFTPAttributes())
        if t != paramiko.sftp.CMD_HANDLE:
            raise IOError("refused")
    attempt("write", "non-utf8", raw_open)
    alive = sorted(sftp.listdir("/"))
    transport.close()
    return {"results": results, "alive": alive}


def cmd_put_many(args):
    remote_dir, locals_ = args.rest[0], args.rest[1:]
    try:
        transport = connect(args)
        sftp = paramiko.SFTPClient.from_transport(transport)
        for local in locals_:
            name = local.rsplit("/", 1)[-1]
            sftp.put(local, f"{remote_dir}/{name}", confirm=False)
            print(json.dumps({"done": name}))
            sys.stdout.flush()
        transport.close()
        return {"finished": True}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def client_transport(args):
    """A connected, unauthenticated transport (from --bind's address when given)."""
    source = (args.bind, 0) if args.bind else None
    sock = socket.create_connection((args.host, args.port), timeout=30, source_address=source)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = 30
    transport.auth_timeout = 30
    transport.start_client(timeout=30)
    return transport


def cmd_mfa(args):
    steps, prompts = [], []
    ok, error = False, None
    transport = None

    def answer(title, instructions, asked):
        answers = []
        for prompt, _echo in asked:
            prompts.append(prompt)
            if "code" in prompt.lower():
                answers.append(args.code or "")
            else:
                answers.append(args.password or "")
        return answers

    try:
        transport = client_transport(args)
        if args.key:
            key = paramiko.Ed25519Key.from_private_key_file(args.key)
            steps.append({"method": "publickey", "remaining": transport.auth_publickey(args.user, key)})
        if args.code and not transport.is_authenticated():
            # One keyboard-interactive login answers the password and the code: paramiko
            # sends a service request before each method, so it cannot chain methods on
            # servers that accept one service request (russh).
            steps.append({"method": "keyboard-interactive",
                          "remaining": transport.auth_interactive(args.user, answer)})
        elif args.password and not transport.is_authenticated():
            steps.append({"method": "password",
                          "remaining": transport.auth_password(args.user, args.password)})
        ok = transport.is_authenticated()
        if ok:
            sftp = paramiko.SFTPClient.from_transport(transport)
            sftp.listdir("/")
            sftp.close()
    except Exception as exc:  # the test asserts on the message
        ok, error = False, f"{type(exc).__name__}: {exc}"
    finally:
        if transport is not None:
            transport.close()
    return {"ok": ok, "error": error, "steps": steps, "prompts": prompts}


def cmd_timing(args):
    count, other = int(args.rest[0]), args.rest[1]
    key = paramiko.Ed25519Key.from_private_key_file(args.key) if args.key else None
    results = {"a": [], "b": []}

    def attempt(user, label):
        transport = client_transport(args)
        start = time.perf_counter()
        try:
            if key is not None:
                transport.auth_publickey(user, key)
            else:
                transport.auth_password(user, args.password)
            result = "accepted"
        except Exception as exc:
            result = f"{type(exc).__name__}: {exc}"
        results[label].append({"seconds": time.perf_counter() - start, "result": result})
        transport.close()

    for i in range(count):
        # Alternate which goes first, so drift over the run hits both alike.
        pair = [(args.user, "a"), (other, "b")]
        if i % 2:
            pair.reverse()
        for user, label in pair:
            attempt(user, label)
    return results


def cmd_fresh_listing(args):
    sender, sender_key, folder, path = args.rest
    transport = connect(args)
    sftp = paramiko.SFTPClient.from_transport(transport)
    _, msg = sftp._request(paramiko.sftp.CMD_OPENDIR, folder)
    handle = msg.get_binary()

    upload = client_transport(args)
    upload.auth_publickey(sender, paramiko.Ed25519Key.from_private_key_file(sender_key))
    with paramiko.SFTPClient.from_transport(upload).open(path, "wb") as remote:
        remote.write(b"news")
    upload.close()

    names = []
    while True:
        try:
            _, msg = sftp._request(paramiko.sftp.CMD_READDIR, handle)
        except EOFError:
            break
        for _ in range(msg.get_int()):
            names.append(msg.get_text())
            msg.get_text()
            paramiko.SFTPAttributes._from_msg(msg)
    sftp._request(paramiko.sftp.CMD_CLOSE, handle)
    try:
        sftp._request(paramiko.sftp.CMD_OPENDIR, path)
        file_opendir_error = None
    except Exception as exc:
        file_opendir_error = f"{type(exc).__name__}: {exc}"
    transport.close()
    return {"names": names, "file_opendir_error": file_opendir_error}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("user")
    parser.add_argument("--password")
    parser.add_argument("--key")
    parser.add_argument("--code")
    parser.add_argument("--bind")
    parser.add_argument("rest", nargs="*")
    args = parser.parse_intermixed_args()
    if args.command in ("put", "get", "write"):
        if args.command in ("put", "write"):
            args.local, args.remote = args.rest
        else:
            args.remote, args.local = args.rest
    handler = {"login": cmd_login, "put": cmd_put, "get": cmd_get, "ranges": cmd_ranges, "write": cmd_write, "hostile": cmd_hostile,
               "put-many": cmd_put_many, "mfa": cmd_mfa, "timing": cmd_timing,
               "fresh-listing": cmd_fresh_listing}[args.command]
    print(json.dumps(handler(args)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
