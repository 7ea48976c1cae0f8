"""A Redis proxy that makes chosen Lua scripts fail, for tests of what the
module does when Redis is connected but a command fails (a Cluster's slot
whose master is down looks the same to the limit checks).

FaultyRedis listens on a port of its own and passes every connection
through to a real Redis, byte for byte, in both directions.  While
`failing` is true, a request that runs one of the scripts named at
construction (EVALSHA <sha1> or EVAL <source>, recognised by the SHA-1 of
lua/<name>.lua) is replaced by a command Redis does not know, so Redis
itself answers it with an error, in order with the connection's other
replies (the module pipelines).  `faults` counts the replaced requests, so
a test can show its faults were met.

Requests are parsed as hiredis sends them (RESP arrays of bulk strings);
anything else closes the client's connection.  Threads, not asyncio: the
tests that use it block in urllib and in their own event loops.
"""

import hashlib
import os
import socket
import threading

from conftest import TOP

FAULT = b"*1\r\n$23\r\nMINICHAT-INJECTED-FAULT\r\n"


def script_sha1(name):
    with open(os.path.join(TOP, "lua", name + ".lua"), "rb") as f:
        return hashlib.sha1(f.read()).hexdigest().encode()


def take_command(buf):
    """(args, raw bytes, rest of buf) of the first complete command in buf,
    or (None, b"", buf) when it is not complete yet.  Raises ValueError on
    what hiredis never sends."""
    if not buf:
        return None, b"", buf
    if buf[:1] != b"*":
        raise ValueError("not a RESP array: %r" % buf[:20])
    end = buf.find(b"\r\n")
    if end < 0:
        return None, b"", buf
    count = int(buf[1:end])
    pos = end + 2
    args = []
    for _ in range(count):
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None, b"", buf
        if buf[pos:pos + 1] != b"$":
            raise ValueError("not a bulk string: %r" % buf[pos:pos + 20])
        size = int(buf[pos + 1:end])
        start = end + 2
        if len(buf) < start + size + 2:
            return None, b"", buf
        args.append(buf[start:start + size])
        pos = start + size + 2
    return args, buf[:pos], buf[pos:]


class FaultyRedis:
    def __init__(self, upstream_port, scripts):
        self.upstream_port = upstream_port
        self.shas = {script_sha1(s) for s in scripts}
        self.failing = False
        self.faults = 0
        self.lock = threading.Lock()
        self.socks = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _fails(self, args):
        if not self.failing or len(args) < 2:
            return False
        verb = args[0].upper()
        if verb == b"EVALSHA":
            return args[1].lower() in self.shas
        if verb == b"EVAL":
            return hashlib.sha1(args[1]).hexdigest().encode() in self.shas
        return False

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.socks += [client, upstream]
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client), daemon=True).start()

    def _requests(self, client, upstream):
        buf = b""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                buf += data
                out = []
                while True:
                    args, raw, buf = take_command(buf)
                    if args is None:
                        break
                    if self._fails(args):
                        with self.lock:
                            self.faults += 1
                        raw = FAULT
                    out.append(raw)
                upstream.sendall(b"".join(out))
        except (OSError, ValueError):
            pass
        self._close(client, upstream)

    def _replies(self, upstream, client):
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        self._close(client, upstream)

    @staticmethod
    def _close(*socks):
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closed = True
        self.listener.close()
        with self.lock:
            for s in self.socks:
                self._close(s)
                s.close()
            self.socks = []
        self.thread.join(5)
