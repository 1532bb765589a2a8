"""FTPS test driver on Python's standard ftplib.FTP_TLS (explicit TLS, PROT P).

Usage: ftplib_client.py HOST PORT CA USER PASSWORD [--plain | --cert=CRT --key=KEY] OP...

Logs in (AUTH TLS, USER/PASS, PBSZ 0, PROT P; with --plain no TLS at all; with --cert and
--key presenting that client certificate in the TLS handshake), then runs each
OP in order and prints one JSON line per step: {"op", "ok", "reply", ...}. A failed login
prints its line and stops. OPs:
  put:LOCAL:REMOTE        STOR (see `store` for how the end of the transfer is handled)
  putlatin1:LOCAL:HEX     STOR to a name given as hex bytes, sent as they are (not UTF-8)
  get:REMOTE:LOCAL        RETR
  list:PATH               LIST (lines in "lines")
  delete:PATH             DELE
  rename:FROM:TO          RNFR/RNTO
  cmd:TEXT                any command; the reply
  stall:REMOTE:BYTES      STOR that sends BYTES, prints, and then hangs until killed
  wait-closed             NOOP every 100 ms until the server closes; "seconds" waited
"""

import ftplib
import json
import os
import ssl
import sys
import time


def out(**fields):
    print(json.dumps(fields), flush=True)


def main():
    host, port, ca, user, password = sys.argv[1:6]
    ops = sys.argv[6:]
    plain = False
    cert = key = None
    while ops and ops[0].startswith("--"):
        option = ops.pop(0)
        if option == "--plain":
            plain = True
        elif option.startswith("--cert="):
            cert = option[len("--cert="):]
        elif option.startswith("--key="):
            key = option[len("--key="):]
        else:
            out(op="options", ok=False, reply="unknown option " + option)
            return
    if plain:
        ftp = ftplib.FTP()
    else:
        context = ssl.create_default_context(cafile=ca)
        if cert:
            context.load_cert_chain(cert, key)
        ftp = ftplib.FTP_TLS(context=context)
    try:
        ftp.connect(host, int(port), timeout=30)
    except (OSError, EOFError, ftplib.Error) as e:
        out(op="connect", ok=False, reply=str(e))
        return
    try:
        if not plain:
            ftp.auth()
        reply = ftp.login(user, password)
        if not plain:
            ftp.prot_p()
    except ftplib.all_errors as e:
        out(op="login", ok=False, reply=str(e))
        return
    out(op="login", ok=True, reply=reply)
    for op in ops:
        name, _, arg = op.partition(":")
        try:
            run(ftp, name, arg)
        except ftplib.all_errors as e:
            out(op=name, ok=False, reply=str(e))


def store(ftp, name, remote, f):
    """ftplib's storbinary, except that a failure on the data connection does not hide the
    server's reply on the control connection, which is what the test checks:

    - a refused upload is answered 150, then the data connection is closed, then 550
      (libunftp checks only once the transfer started), so sendall may fail with a reset;
    - after a complete upload libunftp drops the data connection without its own TLS
      close_notify, so storbinary's unwrap() (a two-way TLS shutdown) fails although our
      close_notify was sent and the file delivered (docs/ftps.md, "Known gaps").
    """
    conn = ftp.transfercmd("STOR " + remote)
    data_error = None
    try:
        while True:
            block = f.read(64 * 1024)
            if not block:
                break
            conn.sendall(block)
        if hasattr(conn, "unwrap"):
            conn.unwrap()
    except OSError as e:
        data_error = str(e)
    finally:
        conn.close()
    out(op=name, ok=True, reply=ftp.voidresp(), data_error=data_error)


def run(ftp, name, arg):
    if name == "put":
        local, remote = arg.split(":", 1)
        with open(local, "rb") as f:
            store(ftp, name, remote, f)
    elif name == "putlatin1":
        local, hexname = arg.split(":", 1)
        ftp.encoding = "latin-1"
        try:
            with open(local, "rb") as f:
                store(ftp, name, bytes.fromhex(hexname).decode("latin-1"), f)
        finally:
            ftp.encoding = "utf-8"
    elif name == "get":
        remote, local = arg.split(":", 1)
        with open(local, "wb") as f:
            out(op=name, ok=True, reply=ftp.retrbinary("RETR " + remote, f.write))
    elif name == "list":
        lines = []
        reply = ftp.retrlines("LIST " + arg, lines.append)
        out(op=name, ok=True, reply=reply, lines=lines)
    elif name == "delete":
        out(op=name, ok=True, reply=ftp.delete(arg))
    elif name == "rename":
        source, target = arg.split(":", 1)
        out(op=name, ok=True, reply=ftp.rename(source, target))
    elif name == "cmd":
        out(op=name, ok=True, reply=ftp.sendcmd(arg))
    elif name == "stall":
        remote, count = arg.split(":", 1)
        conn = ftp.transfercmd("STOR " + remote)
        block = os.urandom(64 * 1024)
        left = int(count)
        while left > 0:
            conn.sendall(block[: min(left, len(block))])
            left -= min(left, len(block))
        out(op=name, ok=True, reply="sent")
        while True:
            time.sleep(3600)
    elif name == "wait-closed":
        start = time.monotonic()
        while True:
            try:
                ftp.voidcmd("NOOP")
            except (EOFError, OSError, ftplib.Error) as e:
                out(op=name, ok=True, reply=str(e), seconds=time.monotonic() - start)
                return
            time.sleep(0.1)
    else:
        out(op=name, ok=False, reply="unknown op")


if __name__ == "__main__":
    main()
