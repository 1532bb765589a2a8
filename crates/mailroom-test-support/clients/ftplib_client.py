"""FTPS test driver on Python's standard ftplib.FTP_TLS (explicit TLS, PROT P).

Usage: ftplib_client.py HOST PORT CA USER PASSWORD [OPTION...] OP...

Logs in (AUTH TLS, USER/PASS, PBSZ 0, PROT P), then runs each OP in order and prints one
JSON line per step: {"op", "ok", "reply", ...}. A failed login prints its line and stops.
Data connections resume the control connection's TLS session, as curl and lftp do (plain
ftplib does not). OPTIONs:
  --plain                 no TLS at all
  --implicit              TLS from the first byte (implicit FTPS), no AUTH TLS
  --cert=CRT --key=KEY    present this client certificate in the TLS handshake
  --no-reuse              data connections do a full TLS handshake (plain ftplib's way)
  --data-from=IP          open data connections from this local address
  --active                active mode (PORT/EPRT): the server connects to the client
OPs:
  put:LOCAL:REMOTE        STOR (see `store` for how the end of the transfer is handled)
  putlatin1:LOCAL:HEX     STOR to a name given as hex bytes, sent as they are (not UTF-8)
  get:REMOTE:LOCAL        RETR
  list:PATH               LIST (lines in "lines")
  delete:PATH             DELE
  rename:FROM:TO          RNFR/RNTO
  cmd:TEXT                any command; the reply
  stall:REMOTE:BYTES      STOR that sends BYTES, prints, and then hangs until killed
  garbage:CMD             PASV, connect, send CMD (e.g. LIST), then bytes that are not a TLS
                          handshake on the data connection; the final reply
  wait-closed             NOOP every 100 ms until the server closes; "seconds" waited
"""

import ftplib
import json
import os
import socket
import ssl
import sys
import time


class Client(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control session (unless `reuse` is off)
    and may come from another local address; with `implicit`, TLS starts at connect."""

    reuse = True
    data_from = None
    implicit = False

    def connect(self, host, port, timeout):
        if not self.implicit:
            return super().connect(host, port, timeout)
        self.host, self.port, self.timeout = host, port, timeout
        sock = socket.create_connection((host, port), timeout)
        self.af = sock.family
        self.sock = self.context.wrap_socket(sock, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def ntransfercmd(self, cmd, rest=None):
        if not self.passiveserver:
            return self.active_transfer(cmd, rest)
        host, port = self.makepasv()
        source = (self.data_from, 0) if self.data_from else None
        conn = socket.create_connection((host, port), self.timeout, source_address=source)
        try:
            self.start_transfer(cmd, rest)
        except BaseException:
            conn.close()
            raise
        return self.secure(conn), None

    def start_transfer(self, cmd, rest):
        """REST if any, then the transfer command, which must be answered 1xx."""
        if rest is not None:
            self.sendcmd("REST %s" % rest)
        resp = self.sendcmd(cmd)
        if resp[0] == "2":
            resp = self.getresp()
        if resp[0] != "1":
            raise ftplib.error_reply(resp)

    def active_transfer(self, cmd, rest):
        with self.makeport() as listener:
            self.start_transfer(cmd, rest)
            conn, _ = listener.accept()
            if self.timeout is not ftplib._GLOBAL_DEFAULT_TIMEOUT:
                conn.settimeout(self.timeout)
        return self.secure(conn), None

    def secure(self, conn):
        if not self._prot_p:
            return conn
        session = self.sock.session if self.reuse else None
        return self.context.wrap_socket(conn, server_hostname=self.host, session=session)


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
        elif option == "--implicit":
            Client.implicit = True
        elif option == "--active":
            Client.passiveserver = False
        elif option == "--no-reuse":
            Client.reuse = False
        elif option.startswith("--data-from="):
            Client.data_from = option[len("--data-from="):]
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
        ftp = Client(context=context)
    try:
        ftp.connect(host, int(port), timeout=30)
    except (OSError, EOFError, ftplib.Error) as e:
        out(op="connect", ok=False, reply=str(e))
        return
    try:
        if not plain and not Client.implicit:
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
    """ftplib's storbinary, except that a failure on the data connection (a refusal while
    the file is sent, such as a quota crossed) does not hide the server's reply on the
    control connection, which is what the tests check; it is reported as data_error."""
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
    elif name == "garbage":
        host, port = ftp.makepasv()
        conn = socket.create_connection((host, port), ftp.timeout)
        try:
            ftp.sendcmd(arg)
            conn.sendall(b"\x16\x03\x01\x00\x10not a client hello" + os.urandom(200))
            out(op=name, ok=True, reply=ftp.voidresp())
        finally:
            conn.close()
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
