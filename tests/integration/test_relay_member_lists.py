"""Member lists on the worker link (lib/include/minichat/member_slots.h,
docs/ARCHITECTURE.md "Member lists on the worker link"): a chat message
carries its room's member list to the relay-worker and from it to each
nginx worker only when that end of the link does not hold the list under the
message's members version; otherwise recipients_cached stands for it.  Here
fake workers (relaylink.py) speak the link: what each one receives must be
the list of the message's version, whole the first time on each link, and
whole again after the version changed or on a new link; a worker that
leaves out a list it never sent is refused."""

import random

from conftest import uid
from relaylink import PUBLISH, Link

# ChatMessage fields (proto/minichat.proto)
ROOM, SEQ, SENDER, CID, BODY, TS, RECIPIENTS, ORIGIN_NODE, KIND, MEMBERS_VER, CACHED = 1, 2, 3, 4, 5, 6, 7, 8, 11, 17, 18


def publish(w, room, seq, sender, ver, members=None, req_id=None):
    """A text message of room at seq: with its list, or (members None)
    recipients_cached under ver."""
    fields = [(ROOM, room), (SEQ, seq), (SENDER, sender), (CID, "c%d" % seq), (BODY, "b%d" % seq),
              (TS, 1732500000000 + seq), (ORIGIN_NODE, "a"), (KIND, "text"), (MEMBERS_VER, ver)]
    fields.append((RECIPIENTS, list(members)) if members is not None else (CACHED, True))
    w.send_message(PUBLISH, fields, req_id=req_id)


def delivered(w, room, seq):
    return w.wait(lambda f: f[1] == "deliver" and f[2]["room"] == room and f[2]["seq"] == seq)[2]


def test_lists_travel_once_per_version_and_link():
    w1, w2, wb = Link("a"), Link("a"), Link("b")
    w3 = None
    try:
        u, v, x = uid(), uid(), uid()
        room = w1.create_room(u, [v])["id"]
        ver = random.randint(1, 2**62)

        # seq 1 with its list: every worker gets it whole, under its version
        publish(w1, room, 1, u, ver, [u, v], req_id=1)
        for w in (w1, w2, wb):
            f = delivered(w, room, 1)
            assert sorted(f["recipients"]) == sorted([u, v]) and f["members_ver"] == ver, f
            assert not f["recipients_cached"], f
        assert w1.wait(lambda f: f[0] == 1)[2]["ok"]

        # seq 2 without it: the relay-worker takes w1's list, and every
        # worker, holding it now, gets the message without it
        publish(w1, room, 2, u, ver, None, req_id=2)
        for w in (w1, w2, wb):
            f = delivered(w, room, 2)
            assert f["recipients_cached"] and f["recipients"] == [] and f["members_ver"] == ver, f
        assert w1.wait(lambda f: f[0] == 2)[2]["ok"]

        # a worker that connects now holds nothing: it gets the list whole
        w3 = Link("a")
        publish(w1, room, 3, u, ver, None)
        f = delivered(w3, room, 3)
        assert sorted(f["recipients"]) == sorted([u, v]) and not f["recipients_cached"], f
        for w in (w2, wb):
            assert delivered(w, room, 3)["recipients_cached"]

        # x joins, v leaves: a new version travels whole to everyone, and the
        # old one is not used again
        publish(w1, room, 4, u, ver + 1, [u, x])
        for w in (w1, w2, w3, wb):
            f = delivered(w, room, 4)
            assert sorted(f["recipients"]) == sorted([u, x]) and f["members_ver"] == ver + 1, f
            assert not f["recipients_cached"], f
        publish(w1, room, 5, u, ver + 1, None)
        for w in (w2, w3, wb):
            f = delivered(w, room, 5)
            assert f["recipients_cached"] and f["members_ver"] == ver + 1, f

        # a message without a version always carries its list
        publish(w1, room, 6, u, 0, [u, x])
        for w in (w2, w3, wb):
            f = delivered(w, room, 6)
            assert sorted(f["recipients"]) == sorted([u, x]) and not f["recipients_cached"], f
    finally:
        for w in (w1, w2, wb, w3):
            if w is not None:
                w.close()


def test_a_list_left_out_that_was_never_sent_is_refused():
    w1, w2 = Link("a"), Link("a")
    try:
        u = uid()
        room = w1.create_room(u, [uid()])["id"]
        ver = random.randint(1, 2**62)
        # w2 sent this version's list, w1 did not: tables are per link
        publish(w2, room, 1, u, ver, [u], req_id=1)
        assert w2.wait(lambda f: f[0] == 1)[2]["ok"]
        publish(w1, room, 2, u, ver, None, req_id=2)
        f = w1.wait(lambda f: f[0] == 2)[2]
        assert not f["ok"] and f["error"].startswith("unavailable:"), f
        closed = False
        try:
            w1.wait(lambda f: False, timeout=5)
        except ConnectionError:
            closed = True
        except AssertionError:
            pass
        assert closed, "the relay-worker kept a link whose member lists are out of step"
        # seq 2 was not delivered; the other link is unaffected
        publish(w2, room, 2, u, ver, None, req_id=3)
        assert w2.wait(lambda f: f[0] == 3)[2]["ok"]
        f = delivered(w2, room, 2)
        assert f["recipients_cached"], f
    finally:
        w1.close()
        w2.close()
