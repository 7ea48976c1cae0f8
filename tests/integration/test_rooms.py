"""Room creation through REST: MySQL rows on the primary and replica, and the
member set in Redis."""

from conftest import create_room, query, redis, rest, token, uid, wait_until


def test_room_rows_and_redis_members():
    u1, u2, u3 = uid(), uid(), uid()
    room = create_room(u1, [u1, u2, u3], node="a", title="room title")

    members = set(int(x) for x in redis("SMEMBERS", "{r:%d}:members" % room))
    assert members == {u1, u2, u3}, members

    rows = query("SELECT id, kind, title, created_by, last_seq FROM rooms WHERE id=%s", (room,))
    assert rows == [{"id": room, "kind": "group", "title": "room title", "created_by": u1, "last_seq": 0}], rows
    mem = query("SELECT user_id, left_at FROM room_members WHERE room_id=%s ORDER BY user_id", (room,))
    assert [m["user_id"] for m in mem] == sorted([u1, u2, u3]), mem
    assert all(m["left_at"] is None for m in mem), mem

    wait_until(lambda: query("SELECT id FROM rooms WHERE id=%s", (room,), "replica"), what="room on the replica")
    wait_until(lambda: len(query("SELECT user_id FROM room_members WHERE room_id=%s", (room,), "replica")) == 3,
               what="members on the replica")


def test_creator_is_a_member_and_ids_are_distinct():
    u1, u2 = uid(), uid()
    r1 = create_room(u1, [u2], node="b")          # the creator left out of the list
    r2 = create_room(u1, [u1, u2], node="a")
    assert r1 != r2
    members = set(int(x) for x in redis("SMEMBERS", "{r:%d}:members" % r1))
    assert members == {u1, u2}, members


def test_room_on_other_node_is_visible_everywhere():
    u1, u2 = uid(), uid()
    room = create_room(u2, [u1, u2], node="b")
    rows = query("SELECT user_id FROM room_members WHERE room_id=%s ORDER BY user_id", (room,))
    assert [r["user_id"] for r in rows] == sorted([u1, u2])


def test_direct_room():
    u1, u2 = uid(), uid()
    status, body = rest("POST", "/api/rooms", "a", token(u1), {"kind": "direct", "title": "", "members": [u1, u2]})
    assert status == 201, (status, body)
    rows = query("SELECT kind FROM rooms WHERE id=%s", (body["id"],))
    assert rows == [{"kind": "direct"}]


def test_title_is_limited_in_characters_not_bytes():
    u = uid()
    tok = token(u)
    ok = "가" * 191                     # 191 characters, 573 bytes
    st, resp = rest("POST", "/api/rooms", "a", tok, {"kind": "group", "title": ok, "members": [uid()]})
    assert st == 201, (st, resp)
    assert query("SELECT title FROM rooms WHERE id=%s", (resp["id"],))[0]["title"] == ok
    st, resp = rest("POST", "/api/rooms", "a", tok, {"kind": "group", "title": ok + "가", "members": [uid()]})
    assert st == 400 and resp["code"] == "bad_request", (st, resp)
