"""A tiny client of the relay-worker's unix socket, as an nginx worker speaks
it: 4-byte big-endian length + one LocalFrame (proto/minichat.proto),
`hello` first.  Python here has no protobuf, so the few messages the tests
need are encoded and decoded by hand: proto3 wire format, varints and
length-delimited fields, repeated integers packed (and accepted unpacked)."""

import os
import socket
import struct
import time

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RUN = os.environ.get("MINICHAT_RUN", os.path.join(TOP, ".run"))


def sock_path(node):
    return os.path.join(RUN, "relay-%s" % node, "relay.sock")


# --- encoding ----------------------------------------------------------------

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode(fields):
    """fields: [(number, value)], value an int, str, bytes (a submessage:
    encode() it first) or a list of ints (packed)."""
    out = bytearray()
    for no, v in fields:
        if v is None:
            continue
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, int):
            out += _varint(no << 3) + _varint(v)
        elif isinstance(v, (list, tuple)):
            body = b"".join(_varint(x) for x in v)
            out += _varint(no << 3 | 2) + _varint(len(body)) + body
        else:
            if isinstance(v, str):
                v = v.encode()
            out += _varint(no << 3 | 2) + _varint(len(v)) + v
    return bytes(out)


# --- decoding ----------------------------------------------------------------

def _read_varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def _fields(b):
    """[(number, wire type, value)] of one message."""
    i, out = 0, []
    while i < len(b):
        key, i = _read_varint(b, i)
        no, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(b, i)
        elif wt == 2:
            n, i = _read_varint(b, i)
            v, i = bytes(b[i:i + n]), i + n
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.append((no, wt, v))
    return out


# name, type: u uint, b bool, s string, ru repeated uint, m:X message, r:X repeated message
SCHEMAS = {
    "ChatMessage": {1: ("room", "u"), 2: ("seq", "u"), 3: ("sender", "u"), 4: ("cid", "s"), 5: ("body", "s"),
                    6: ("ts", "u"), 7: ("recipients", "ru"), 8: ("origin_node", "s"), 9: ("origin_conn", "u"),
                    10: ("persist_only", "b"), 11: ("kind", "s"), 12: ("seq_read", "u"), 13: ("online", "b"),
                    14: ("last_seen", "u"), 17: ("members_ver", "u"), 18: ("recipients_cached", "b")},
    "CreateRoomResult": {1: ("id", "u"), 2: ("error", "s"), 3: ("existed", "b"), 4: ("members", "ru")},
    "PublishResult": {1: ("ok", "b"), 2: ("error", "s")},
    "RoomStateResult": {1: ("error", "s"), 2: ("found", "b"), 3: ("last_seq", "u"), 4: ("members", "ru"),
                        5: ("left", "ru"), 6: ("left_seq", "ru"), 7: ("read_user", "ru"), 8: ("read_seq", "ru"),
                        9: ("idem_sender", "ru"), 10: ("idem_cid", "rs"), 11: ("idem_seq", "ru"),
                        12: ("idem_ts", "ru")},
    "HistoryResult": {1: ("error", "s"), 2: ("messages", "r:ChatMessage")},
    "RoomSummary": {1: ("id", "u"), 2: ("kind", "s"), 3: ("title", "s"), 4: ("last_seq", "u"),
                    5: ("last_read_seq", "u"), 6: ("last_message_at", "u"), 7: ("last_preview", "s"),
                    8: ("members", "u")},
    "RoomsResult": {1: ("error", "s"), 2: ("rooms", "r:RoomSummary"), 3: ("next_cursor", "s")},
    "RoomMember": {1: ("user", "u"), 2: ("last_read_seq", "u"), 3: ("joined_seq", "u")},
    "RoomInfoResult": {1: ("error", "s"), 2: ("room", "m:RoomSummary"), 3: ("members", "r:RoomMember"),
                       4: ("created_by", "u"), 5: ("created_at", "u")},
    "InviteResult": {1: ("error", "s"), 2: ("room", "u"), 3: ("created", "b"), 4: ("added", "ru"),
                     5: ("members", "ru")},
    "LeaveResult": {1: ("error", "s"), 2: ("left_seq", "u")},
    "ContactsResult": {1: ("error", "s"), 2: ("users", "ru")},
    "StatusResult": {1: ("json", "s")},
    "UserSet": {1: ("full", "b"), 2: ("add", "ru"), 3: ("del", "ru"), 4: ("all", "b")},
}

# LocalFrame body fields relay -> nginx, and their message types
FRAME_BODIES = {4: ("deliver", "ChatMessage"), 6: ("create_room_result", "CreateRoomResult"),
                7: ("publish_result", "PublishResult"), 9: ("room_state_result", "RoomStateResult"),
                11: ("history_result", "HistoryResult"), 13: ("rooms_result", "RoomsResult"),
                15: ("room_info_result", "RoomInfoResult"), 17: ("invite_result", "InviteResult"),
                19: ("leave_result", "LeaveResult"), 21: ("contacts_result", "ContactsResult"),
                41: ("status", "StatusResult"), 42: ("users", "UserSet"),
                22: ("event", "ChatMessage")}


def decode(name, b):
    """A message as a dict with every field of the schema (proto3 defaults)."""
    schema = SCHEMAS[name]
    out = {}
    for fname, t in schema.values():
        out[fname] = [] if t[0] == "r" else None if t.startswith("m:") else "" if t == "s" else \
            False if t == "b" else 0
    for no, wt, v in _fields(b):
        if no not in schema:
            continue
        fname, t = schema[no]
        if t == "u":
            out[fname] = v
        elif t == "b":
            out[fname] = bool(v)
        elif t == "s":
            out[fname] = v.decode()
        elif t == "ru":
            if wt == 0:
                out[fname].append(v)
            else:
                i = 0
                while i < len(v):
                    x, i = _read_varint(v, i)
                    out[fname].append(x)
        elif t == "rs":
            out[fname].append(v.decode())
        elif t.startswith("m:"):
            out[fname] = decode(t[2:], v)
        elif t.startswith("r:"):
            out[fname].append(decode(t[2:], v))
    return out


def decode_frame(b):
    """(req_id, body name, body dict) of a LocalFrame."""
    req_id, body = 0, (None, None)
    for no, _wt, v in _fields(b):
        if no == 1:
            req_id = v
        elif no in FRAME_BODIES:
            name, typ = FRAME_BODIES[no]
            body = (name, decode(typ, v))
    return req_id, body[0], body[1]


# --- the link ----------------------------------------------------------------

# LocalFrame request fields
CREATE_ROOM, PUBLISH, ROOM_STATE, HISTORY, ROOMS, ROOM_INFO, INVITE, LEAVE, CONTACTS, EVENT, STATUS_REQ, USERS = \
    5, 3, 8, 10, 12, 14, 16, 18, 20, 22, 40, 42


class Link:
    """One connection to a relay-worker, posing as an nginx worker."""

    def __init__(self, node="a", name=None, path=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path or sock_path(node))  # path: a relay-worker of the test's own
        self.buf = b""
        self.frames = []          # (req_id, body name, body) received, not yet taken
        self.next_req = 1000
        self.send_frame(encode([(2, encode([(1, name or node), (2, os.getpid())]))]))
        # one round trip: the relay has taken the hello once it answers, so
        # broadcasts from now on reach this link
        assert self.contacts(0)["error"].startswith("bad_request:")

    def close(self):
        self.sock.close()

    def send_frame(self, payload):
        self.sock.sendall(struct.pack(">I", len(payload)) + payload)

    def _read(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        if not data:
            raise ConnectionError("the relay-worker closed the link")
        self.buf += data
        while len(self.buf) >= 4:
            (n,) = struct.unpack(">I", self.buf[:4])
            if len(self.buf) < 4 + n:
                break
            self.frames.append(decode_frame(self.buf[4:4 + n]))
            self.buf = self.buf[4 + n:]

    def wait(self, match, timeout=10.0):
        """The first received frame (req_id, name, body) for which match() holds."""
        deadline = time.monotonic() + timeout
        while True:
            for i, f in enumerate(self.frames):
                if match(f):
                    return self.frames.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no matching frame within %.1fs" % timeout)
            self._read(left)

    def request(self, field, body_fields, timeout=15.0):
        """Send a request (LocalFrame field `field`); return the result body."""
        self.next_req += 1
        rid = self.next_req
        self.send_frame(encode([(1, rid), (field, encode(body_fields))]))
        return self.wait(lambda f: f[0] == rid, timeout)[2]

    def send_message(self, field, msg_fields, req_id=None):
        self.send_frame(encode([(1, req_id), (field, encode(msg_fields))]))

    # requests, in the proto's terms
    def create_room(self, creator, members, kind="group", title="t", key=None):
        return self.request(CREATE_ROOM, [(1, kind), (2, title), (3, creator), (4, list(members)), (5, key)])

    def room_state(self, room):
        return self.request(ROOM_STATE, [(1, room)])

    def history(self, room, before, limit=0):
        return self.request(HISTORY, [(1, room), (2, before), (3, limit)])

    def rooms(self, user, limit=0, cursor=None):
        return self.request(ROOMS, [(1, user), (2, limit), (3, cursor)])

    def room_info(self, room, user):
        return self.request(ROOM_INFO, [(1, room), (2, user)])

    def invite(self, room, user, members, joined_seq=0):
        return self.request(INVITE, [(1, room), (2, user), (3, list(members)), (4, joined_seq)])

    def leave(self, room, user, left_seq):
        return self.request(LEAVE, [(1, room), (2, user), (3, left_seq)])

    def contacts(self, user, limit=0):
        return self.request(CONTACTS, [(1, user), (2, limit)])

    def users(self, add=(), delete=(), full=False):
        """Announce which users this fake worker holds (UserSet): the whole
        set with full, else changes; returns once the relay-worker answered,
        so every deliver after this was chosen with it."""
        return self.request(USERS, [(1, full or None), (2, list(add) or None), (3, list(delete) or None)])

    def status(self):
        """The relay-worker's status JSON text (StatusRequest is empty)."""
        return self.request(STATUS_REQ, [])["json"]
