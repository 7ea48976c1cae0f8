// MiniChat demo web client: plain JS, no build step, no dependencies.
//
// The connection, reconnects, resume, ordering and send retries are the
// client library's (minichat.js, docs/client.md); this file is the page:
// room state and rendering.  It talks to the node that served the page, and
// degrades gracefully
// when the server does not know an op yet: an `error` bad_request "unknown
// op" marks the op unsupported for the life of the page (the room list is
// then built from rooms created here and messages received, history shows
// only what arrived live, and so on).
//
// Demo users and their tokens come from /demo/tokens.json, which only the
// dev stack serves (scripts/stack.sh mints it at start); the page never sees
// the JWT secret.
import { MiniChatClient } from './minichat.js';

const $ = (id) => document.getElementById(id);

const HISTORY_PAGE = 50;
const ROOMS_PAGE = 20;
const TYPING_SHOW_MS = 3000;    // show "X is typing…" this long

const S = {
  users: [],                    // demo users: {id, name, token}
  names: new Map(),             // user id -> name
  me: null,                     // {id, name, token}
  client: null,                 // the MiniChatClient (minichat.js)
  connected: false,
  node: null,
  unsupported: new Set(),       // ops the server answered "unknown op"
  rooms: new Map(),             // room id -> room state (see room())
  openId: null,                 // the room shown on the right
  roomsCursor: null,
  presence: new Map(),          // user -> {online, last_seen}
  readTimer: null,
  roomsTimer: null,
};
window.minichat = S;            // for debugging in the console

// --- helpers ---------------------------------------------------------------

function nameOf(user) {
  const n = Number(user);
  return S.names.get(n) || ('User ' + n);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function fmtTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function showMessage(text, cls) {
  const box = $('errors');
  const item = el('div', { class: cls, 'data-testid': cls },
    el('span', { text: text }),
    el('button', { class: 'x', title: 'dismiss', onclick: () => item.remove(), text: '×' }));
  box.append(item);
  while (box.children.length > 5) box.firstChild.remove();
}
const showError = (t) => showMessage(t, 'error');
const showNotice = (t) => showMessage(t, 'notice');

function setConn(state, detail) {
  const c = $('conn');
  c.className = 'conn ' + state;
  c.textContent = detail ? state + ' ' + detail : state;
  c.dataset.state = state;
}

function systemText(body) {
  let ev;
  try { ev = JSON.parse(body); } catch (e) { return body; }
  if (!ev || typeof ev !== 'object') return String(body);
  if (ev.event === 'join') return (ev.users || []).map(nameOf).join(', ') + ' joined';
  if (ev.event === 'leave') return nameOf(ev.user) + ' left';
  if (ev.event === 'create') return 'room created';
  return ev.event ? String(ev.event) : String(body);
}

function preview(m) {
  if (m.kind === 'system') return systemText(m.body);
  return (m.from === S.me.id ? 'You: ' : nameOf(m.from) + ': ') + m.body;
}

// --- rooms state -------------------------------------------------------------

function room(id) {
  id = Number(id);
  let r = S.rooms.get(id);
  if (!r) {
    r = {
      id, title: null, kind: 'group', members: null, memberIds: null,
      last_seq: 0, last_message_at: 0, last_preview: '', known_at: Date.now(),
      msgs: new Map(),          // seq -> {seq, from, cid, body, ts, kind, unread}
      outgoing: new Map(),      // cid -> {cid, body, ts, state, error}
      oldest: null, more: null, loaded: false, loading: false,
      ptr: new Map(),           // user -> last read seq (as far as we know)
      readSent: 0,
      typers: new Map(),        // user -> until (ms)
      refreshTimer: null,
    };
    S.rooms.set(id, r);
  }
  return r;
}

function myPtr(r) { return r.ptr.has(S.me.id) ? r.ptr.get(S.me.id) : null; }

function unreadOf(r) {
  const p = myPtr(r);
  return p === null ? 0 : Math.max(0, r.last_seq - p);
}

function roomTitle(r) {
  if (r.title) return r.title;
  if (r.memberIds) {
    const others = r.memberIds.filter((u) => u !== S.me.id);
    if (others.length) return others.map(nameOf).join(', ');
  }
  return 'Room #' + r.id;
}

// A message (live, replayed, acked or from history) into the room's state.
// Returns false for a seq already known.
function addMsg(r, m, live) {
  const seq = Number(m.seq);
  const known = r.msgs.get(seq);
  if (known) {
    if (!live && typeof m.unread === 'number') known.unread = m.unread;
    return false;
  }
  const from = Number(m.from);
  const entry = {
    seq, from, cid: m.cid, body: m.body === undefined ? '' : String(m.body), ts: m.ts || 0,
    kind: m.kind === 'system' ? 'system' : 'user', unread: null,
  };
  if (typeof m.unread === 'number') {
    entry.unread = m.unread;
  } else if (live && r.members) {
    // Everyone but the sender, less those whose pointer is already past it.
    let n = r.members - 1;
    for (const [u, p] of r.ptr) if (u !== from && p >= seq) n--;
    entry.unread = Math.max(0, n);
  }
  r.msgs.set(seq, entry);
  if (live && entry.kind !== 'system') bumpPtr(r, from, seq);   // the sender has read its own
  if (from === S.me.id && m.cid) r.outgoing.delete(m.cid);
  if (seq > r.last_seq) r.last_seq = seq;
  if (seq >= r.last_seq) {
    if (entry.ts) r.last_message_at = Math.max(r.last_message_at, entry.ts);
    r.last_preview = preview(entry);
  }
  return true;
}

function bumpPtr(r, user, seq) {
  const p = r.ptr.get(user);
  if (p === undefined || seq > p) r.ptr.set(user, seq);
}

// `user` has read up to `seq`: per-message unread counts drop by one for
// the messages between its previous pointer and seq.
function applyRead(r, user, seq) {
  const prev = r.ptr.has(user) ? r.ptr.get(user) : null;
  if (prev !== null && seq <= prev) return;
  r.ptr.set(user, seq);
  const fromHistory = [...r.msgs.values()].some((m) => m.hist);
  if (prev === null && fromHistory && !S.unsupported.has('history')) {
    refreshCounts(r);       // we cannot tell which ones it had read: ask
    return;
  }
  for (const m of r.msgs.values()) {
    if (m.seq > (prev || 0) && m.seq <= seq && m.from !== user && m.unread > 0) m.unread--;
  }
}

// Per-message unread counts again from the server (latest page).
function refreshCounts(r) {
  clearTimeout(r.refreshTimer);
  r.refreshTimer = setTimeout(async () => {
    const n = Math.min(Math.max(r.msgs.size, 1), 100);
    const rep = await request({ op: 'history', room: r.id, limit: n });
    if (rep && rep.op === 'history' && Array.isArray(rep.messages)) {
      for (const m of rep.messages) {
        const k = r.msgs.get(Number(m.seq));
        if (k && typeof m.unread === 'number') k.unread = m.unread;
      }
      if (r.id === S.openId) renderMessages();
    }
  }, 200);
}

// --- connection (minichat.js) ----------------------------------------------------

function sidKey() { return 'minichat.sid.' + S.me.id; }

function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  // The library sends the token as a `bearer.<JWT>` subprotocol entry
  // beside minichat.v1, not in the URL: URLs end up in logs and histories.
  S.client = new MiniChatClient({
    url: proto + '//' + location.host + '/ws',
    sid: sessionStorage.getItem(sidKey()),
    // The stack re-mints tokens when it restarts: pick up a fresh one.
    token: async ({ attempt }) => {
      if (attempt >= 2) await loadUsers().catch(() => {});
      return S.me.token;
    },
  });
  const c = S.client;
  c.on('state', onState);
  c.on('hello', onHello);
  c.on('message', onMsg);
  c.on('resumed', onResumed);
  c.on('read', onRead);
  c.on('typing', onTyping);
  c.on('presence', onPresence);
  c.on('error', (e) => showError(e.code + ': ' + (e.frame ? e.frame.message || '' : e.message)));
  c.connect();
}

function onState(ev) {
  if (ev.state === 'online') return;          // onHello
  S.connected = false;
  if (ev.state === 'connecting') setConn('connecting');
  else if (ev.state === 'offline') setConn('offline', '— reconnecting in ' + Math.ceil(ev.delay / 1000) + ' s');
  else if (ev.state === 'closed') setConn('offline', '(' + ev.code + (ev.reason ? ' ' + ev.reason : '') + ')');
}

// A request through the library; resolves with the reply, the error frame
// ({op: 'error', code: 'disconnected'} when not connected), or null on a
// timeout.
function request(obj, timeout) {
  if (S.unsupported.has(obj.op)) {
    return Promise.resolve({ op: 'error', code: 'bad_request', message: 'unknown op', unsupported: true });
  }
  return S.client.request(obj, { timeoutMs: timeout }).catch((e) => {
    if (e.code === 'timeout') return null;
    const f = e.frame || { op: 'error', code: e.code, message: e.message };
    if (isUnknownOp(f)) markUnsupported(obj.op);
    return f;
  });
}

function isUnknownOp(f) {
  return f && f.op === 'error' && f.code === 'bad_request' && /unknown op/i.test(f.message || '');
}

// One notice lists what the server does not support yet and what the
// page does instead.
function markUnsupported(op) {
  if (!op || S.unsupported.has(op)) return;
  S.unsupported.add(op);
  const what = {
    rooms: 'rooms: only rooms created here or that received messages are listed',
    history: 'history: only messages received while the page is open',
    read: 'read: receipts are not sent',
    typing: 'typing: not sent',
  };
  let box = document.querySelector('[data-testid=unsupported]');
  if (!box) {
    showNotice('');
    box = $('errors').lastChild;
    box.dataset.testid = 'unsupported';
  }
  box.firstChild.textContent = 'Not supported by this server yet — ' +
    [...S.unsupported].map((o) => what[o] || o).join('; ');
}

function onHello(f) {
  S.connected = true;
  S.node = f.node;
  if (f.sid) sessionStorage.setItem(sidKey(), f.sid);
  $('node').textContent = 'node ' + f.node + (f.resumed ? ' (session resumed)' : '');
  $('node').dataset.node = f.node || '';
  setConn('online');
  // The library resumes the rooms it follows, sends unacked messages again
  // (same cid) and reads that did not get their ok.
  loadRooms(null);
  if (S.openId !== null && !room(S.openId).loaded) loadHistory(room(S.openId), null);
  scheduleRead();
}

// The library replayed what this page missed in the room, or (recovered
// false) could not: then the page reloads the room's history.
function onResumed(ev) {
  if (!ev.recovered) reloadRooms([room(ev.room)]);
}

// Forget what we hold of these rooms and page their history again.
function reloadRooms(list) {
  for (const r of list) {
    if (S.unsupported.has('history')) continue;     // nothing to reload from: accept the gap
    r.msgs.clear();
    r.oldest = null;
    r.more = null;
    r.loaded = false;
    if (r.id === S.openId) loadHistory(r, null);
  }
  renderRooms();
  if (S.openId !== null) renderMessages();
}

// --- incoming events -----------------------------------------------------------

function onMsg(f) {
  if (typeof f.room !== 'number' || typeof f.seq !== 'number') return;
  const isNewRoom = !S.rooms.has(f.room);
  const r = room(f.room);
  if (isNewRoom) discoverRoom(r, f.seq);
  // The library delivers each seq once and in order (it resumes over holes).
  if (!addMsg(r, f, true)) return;
  r.typers.delete(Number(f.from));
  if (f.kind === 'system') onSystem(r, f);
  renderRooms();
  if (r.id === S.openId) {
    renderMessages();
    renderTyping();
    scheduleRead();
  }
}

// A message for a room this page did not know: it shows up in the list.
function discoverRoom(r, seq) {
  // Unread counts start with this message unless the room list says more.
  r.ptr.set(S.me.id, seq - 1);
  r.ptrGuessed = true;
  if (!S.unsupported.has('rooms')) {
    clearTimeout(S.roomsTimer);
    S.roomsTimer = setTimeout(() => loadRooms(null), 300);
  }
  // The room's title and members, when the server has the endpoint.
  api('GET', '/api/rooms/' + r.id).then(({ status, body }) => {
    if (status === 200 && body && typeof body === 'object') {
      mergeRoom(r, body.room && typeof body.room === 'object' ? body.room : body);
      renderRooms();
      if (r.id === S.openId) renderHead();
    }
  }).catch(() => {});
}

function onSystem(r, f) {
  let ev;
  try { ev = JSON.parse(f.body); } catch (e) { return; }
  if (!ev) return;
  if (ev.event === 'join' && Array.isArray(ev.users)) {
    if (r.members !== null) r.members += ev.users.length;
    if (r.memberIds) for (const u of ev.users) r.memberIds.push(Number(u));
  } else if (ev.event === 'leave') {
    if (r.members !== null) r.members = Math.max(1, r.members - 1);
    if (r.memberIds) r.memberIds = r.memberIds.filter((u) => u !== Number(ev.user));
    r.ptr.delete(Number(ev.user));
  }
  if (r.id === S.openId) renderHead();
}

function onAck(f) {
  const r = room(f.room);
  const out = r.outgoing.get(f.cid);
  addMsg(r, { seq: f.seq, from: S.me.id, cid: f.cid, body: out ? out.body : '', ts: f.ts }, true);
  r.outgoing.delete(f.cid);
  renderRooms();
  if (r.id === S.openId) renderMessages();
}

function onRead(f) {
  if (typeof f.room !== 'number' || typeof f.seq !== 'number') return;
  const r = S.rooms.get(f.room);
  if (!r) return;
  applyRead(r, Number(f.user), f.seq);
  renderRooms();
  if (r.id === S.openId) renderMessages();
}

function onTyping(f) {
  const user = Number(f.user);
  const r = S.rooms.get(f.room);
  // A room the page does not list yet shows up with its first message.
  if (user === S.me.id || !r) return;
  r.typers.set(user, Date.now() + TYPING_SHOW_MS);
  if (r.id === S.openId) renderTyping();
  setTimeout(() => { if (r.id === S.openId) renderTyping(); }, TYPING_SHOW_MS + 50);
}

function onPresence(f) {
  S.presence.set(Number(f.user), { online: !!f.online, last_seen: f.last_seen || null });
  renderPeople();
}

// --- requests ------------------------------------------------------------------

function mergeRoom(r, x) {
  if (typeof x.title === 'string' && x.title) r.title = x.title;
  if (typeof x.kind === 'string') r.kind = x.kind;
  if (Array.isArray(x.members)) {
    r.memberIds = x.members.map((m) => Number(typeof m === 'object' && m ? (m.user || m.id) : m));
    r.members = r.memberIds.length;
  } else if (typeof x.members === 'number') {
    r.members = x.members;
  }
  if (typeof x.last_seq === 'number') {
    if (x.last_seq > r.last_seq) r.last_seq = x.last_seq;
    if (typeof x.unread === 'number') {
      // The server's unread is last_seq - my read pointer (which only
      // moves forward: a newer local read wins over a stale answer).
      const p = Math.max(0, x.last_seq - x.unread);
      const mine = myPtr(r);
      r.ptr.set(S.me.id, mine === null || r.ptrGuessed ? p : Math.max(mine, p));
      r.ptrGuessed = false;
    }
  }
  if (typeof x.last_message_at === 'number') r.last_message_at = Math.max(r.last_message_at, x.last_message_at);
  if (typeof x.last_preview === 'string' && x.last_preview && r.msgs.size === 0) r.last_preview = x.last_preview;
}

async function loadRooms(cursor) {
  if (S.unsupported.has('rooms')) return;
  const req = { op: 'rooms', limit: ROOMS_PAGE };
  if (cursor) req.cursor = cursor;
  const rep = await request(req);
  if (!rep) return;
  if (rep.op === 'error') {
    if (!isUnknownOp(rep) && !rep.unsupported && rep.code !== 'disconnected') {
      showError('rooms: ' + rep.code + ': ' + (rep.message || ''));
    }
    return;
  }
  if (rep.op !== 'rooms' || !Array.isArray(rep.rooms)) return;
  for (const x of rep.rooms) {
    if (!x || typeof x.id !== 'number') continue;
    mergeRoom(room(x.id), x);
  }
  S.roomsCursor = rep.cursor || null;
  $('more-rooms').hidden = !S.roomsCursor;
  renderRooms();
  if (S.openId !== null) renderHead();
  scheduleRead();
}

async function loadHistory(r, before) {
  if (r.loading) return;
  if (S.unsupported.has('history')) {
    r.loaded = true;
    r.more = false;
    if (r.id === S.openId) renderMessages();
    return;
  }
  r.loading = true;
  if (r.id === S.openId) renderHistoryStatus();
  const req = { op: 'history', room: r.id, limit: HISTORY_PAGE };
  if (before) req.before = before;
  const rep = await request(req);
  r.loading = false;
  if (!rep || rep.op === 'error') {
    if (rep && !isUnknownOp(rep) && !rep.unsupported && rep.code !== 'disconnected') {
      showError('history: ' + rep.code + ': ' + (rep.message || ''));
      r.more = false;
    }
    if (rep && (isUnknownOp(rep) || rep.unsupported)) { r.loaded = true; r.more = false; }
    if (r.id === S.openId) renderMessages();
    return;
  }
  const el_ = $('messages');
  const fromBottom = el_.scrollHeight - el_.scrollTop;
  let maxSeq = 0;
  for (const m of rep.messages || []) {
    if (!m || typeof m.seq !== 'number') continue;
    addMsg(r, m, false);
    const k = r.msgs.get(m.seq);
    if (k) k.hist = true;
    if (r.oldest === null || m.seq < r.oldest) r.oldest = m.seq;
    if (m.seq > maxSeq) maxSeq = m.seq;
  }
  r.more = !!rep.more;
  if (!before) {
    r.loaded = true;
    const last = typeof rep.last_seq === 'number' ? rep.last_seq : maxSeq;
    if (last > r.last_seq) r.last_seq = last;
    // Everything up to the room's last seq is here or older than the page:
    // the library follows the room from there (live, and resumed after a
    // reconnect).
    S.client.resume({ [r.id]: { seq: last, epoch: rep.epoch || '' } });
  }
  renderRooms();
  if (r.id === S.openId) {
    renderMessages();
    if (before) el_.scrollTop = el_.scrollHeight - fromBottom;   // keep the view still
    else el_.scrollTop = el_.scrollHeight;
    scheduleRead();
    // A short first page on a tall window: fetch more until it scrolls.
    if (r.more && el_.scrollHeight <= el_.clientHeight) loadHistory(r, r.oldest);
  }
}

// The library keeps the message until its ack, sending it again with the
// same cid after a reconnect, a timeout, `unavailable` or `rate_limited`.
function transmit(r, out) {
  out.state = 'sending';
  S.client.send(r.id, out.body, { cid: out.cid }).then(onAck, (e) => {
    if (!r.outgoing.has(out.cid)) return;
    out.state = 'failed';
    out.error = e.code + ': ' + (e.frame ? e.frame.message || '' : e.message);
    if (e.code !== 'closed') showError('send: ' + out.error);
    if (r.id === S.openId) renderMessages();
  });
}

function api(method, path, body) {
  const opts = { method, headers: { Authorization: 'Bearer ' + S.me.token } };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  return fetch(path, opts).then(async (resp) => {
    const text = await resp.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = text; }
    return { status: resp.status, body: parsed };
  });
}

// --- reading ---------------------------------------------------------------------

function canRead() {
  return document.visibilityState === 'visible' && document.hasFocus();
}

// The highest seq whose message is at least partly inside the list's view.
function highestVisibleSeq() {
  const box = $('messages');
  const bottom = box.getBoundingClientRect().bottom;
  const items = box.querySelectorAll('[data-seq]');
  for (let i = items.length - 1; i >= 0; i--) {
    if (items[i].getBoundingClientRect().top < bottom) return Number(items[i].dataset.seq);
  }
  return 0;
}

function scheduleRead() {
  if (S.readTimer) return;
  S.readTimer = setTimeout(() => { S.readTimer = null; maybeRead(); }, 100);
}

function maybeRead() {
  if (S.openId === null || !S.me || !canRead()) return;
  const r = room(S.openId);
  const seq = highestVisibleSeq();
  if (!seq) return;
  const mine = myPtr(r);
  if (seq <= r.readSent || (mine !== null && seq <= mine)) return;
  r.readSent = seq;
  applyRead(r, S.me.id, seq);
  renderRooms();
  renderMessages();
  sendRead(r, seq);
}

// Tell the server; the library sends a read that did not get through again
// after the next hello (the pointer only moves forward: a repeat is harmless).
function sendRead(r, seq) {
  if (S.unsupported.has('read')) return;
  S.client.read(r.id, seq).catch((e) => {
    if (e.code === 'disconnected' || e.code === 'timeout' || e.code === 'closed') return;
    const f = e.frame || {};
    if (isUnknownOp(f)) markUnsupported('read');
    else showError('read: ' + e.code + ': ' + (f.message || e.message));
  });
}

// --- rendering -------------------------------------------------------------------

function renderPeople() {
  const ul = $('people');
  ul.replaceChildren();
  for (const u of S.users) {
    if (u.id === S.me.id) continue;
    const p = S.presence.get(u.id);
    const state = p ? (p.online ? 'online' : 'offline') : 'unknown';
    const title = p && !p.online && p.last_seen ? 'last seen ' + new Date(p.last_seen).toLocaleString() : state;
    ul.append(el('li', { 'data-testid': 'person', 'data-user': u.id },
      el('span', { class: 'dot ' + state, 'data-testid': 'presence-' + u.id, 'data-state': state, title }),
      el('span', { text: u.name })));
  }
}

function sortedRooms() {
  const key = (r) => r.last_message_at || r.known_at || 0;
  return [...S.rooms.values()].sort((a, b) => (key(b) - key(a)) || (b.id - a.id));
}

function renderRooms() {
  const ul = $('room-list');
  ul.replaceChildren();
  for (const r of sortedRooms()) {
    const n = unreadOf(r);
    ul.append(el('li', {
      class: 'room' + (r.id === S.openId ? ' active' : ''),
      'data-testid': 'room-item', 'data-room': r.id,
      onclick: () => openRoom(r.id),
    },
    el('div', { class: 'room-line' },
      el('span', { class: 'room-name', 'data-testid': 'room-name', text: roomTitle(r) }),
      el('span', { class: 'badge', 'data-testid': 'unread-badge', 'data-count': n, text: n > 99 ? '99+' : String(n) })),
    el('div', { class: 'preview', text: r.last_preview || '' })));
  }
}

function renderHead() {
  if (S.openId === null) return;
  const r = room(S.openId);
  $('room-title').textContent = roomTitle(r);
  $('room-title').dataset.room = r.id;
  const bits = [];
  if (r.members !== null) bits.push(r.members + ' members');
  if (r.memberIds) bits.push(r.memberIds.map(nameOf).join(', '));
  $('room-info').textContent = bits.join(' · ');
}

function renderHistoryStatus() {
  const st = $('history-status');
  if (S.openId === null) { st.textContent = ''; return; }
  const r = room(S.openId);
  let t = '';
  if (r.loading) t = 'Loading…';
  else if (S.unsupported.has('history')) t = 'History is not available yet: messages received while this page is open.';
  else if (r.more) t = 'Scroll up for older messages';
  else if (r.loaded) t = 'Beginning of the conversation';
  st.textContent = t;
  st.dataset.state = r.loading ? 'loading' : (r.more ? 'more' : 'done');
}

function renderMessages() {
  if (S.openId === null) return;
  const r = room(S.openId);
  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const status = $('history-status');
  const nodes = [status];
  const seqs = [...r.msgs.keys()].sort((a, b) => a - b);
  for (const s of seqs) nodes.push(renderMsg(r.msgs.get(s)));
  for (const out of r.outgoing.values()) nodes.push(renderOutgoing(r, out));
  box.replaceChildren(...nodes);
  renderHistoryStatus();
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function renderMsg(m) {
  if (m.kind === 'system') {
    return el('div', { class: 'sys', 'data-testid': 'system-message', 'data-seq': m.seq, text: systemText(m.body) });
  }
  const mine = m.from === S.me.id;
  const unread = m.unread > 0 ? el('span', { class: 'unread', 'data-testid': 'message-unread', text: String(m.unread) }) : null;
  return el('div', { class: 'msg' + (mine ? ' mine' : ''), 'data-testid': 'message', 'data-seq': m.seq, 'data-from': m.from },
    mine ? null : el('div', { class: 'from', text: nameOf(m.from) }),
    el('div', { class: 'row' },
      el('div', { class: 'bubble', 'data-testid': 'message-body', text: m.body }),
      el('div', { class: 'side-info' }, unread, el('time', { text: fmtTime(m.ts) }))));
}

function renderOutgoing(r, out) {
  const retry = out.state === 'failed'
    ? el('button', { class: 'retry', onclick: () => { out.state = 'sending'; transmit(r, out); renderMessages(); }, text: 'retry' })
    : null;
  return el('div', { class: 'msg mine ' + out.state, 'data-testid': 'message', 'data-pending': out.state, 'data-cid': out.cid },
    el('div', { class: 'row' },
      el('div', { class: 'bubble', 'data-testid': 'message-body', text: out.body }),
      el('div', { class: 'side-info' },
        el('span', { class: 'state', text: out.state === 'failed' ? 'failed: ' + out.error : out.state + '…' }), retry)));
}

function renderTyping() {
  const t = $('typing');
  if (S.openId === null) { t.textContent = ''; return; }
  const r = room(S.openId);
  const now = Date.now();
  const names = [];
  for (const [u, until] of r.typers) {
    if (until > now) names.push(nameOf(u)); else r.typers.delete(u);
  }
  t.textContent = names.length === 0 ? '' : names.join(', ') + (names.length === 1 ? ' is typing…' : ' are typing…');
}

function openRoom(id) {
  S.openId = Number(id);
  const r = room(id);
  r.readSent = 0;
  $('composer').disabled = false;
  $('send').disabled = false;
  renderRooms();
  renderHead();
  renderMessages();
  renderTyping();
  const box = $('messages');
  box.scrollTop = box.scrollHeight;
  if (!r.loaded && S.connected) loadHistory(r, null);
  scheduleRead();
  $('composer').focus();
}

// --- user actions --------------------------------------------------------------

function onSubmitMessage(ev) {
  ev.preventDefault();
  const input = $('composer');
  const body = input.value;
  if (S.openId === null || !body.trim()) return;
  const r = room(S.openId);
  const rnd = Math.floor(Math.random() * 1e9).toString(36);
  const out = { cid: S.me.id + '-' + Date.now().toString(36) + '-' + rnd, body, ts: Date.now(), state: 'queued' };
  r.outgoing.set(out.cid, out);
  input.value = '';
  const box = $('messages');
  renderMessages();
  box.scrollTop = box.scrollHeight;
  transmit(r, out);                           // queued by the library while offline
}

function onComposerInput() {
  if (S.openId === null || !S.connected || !$('composer').value) return;
  S.client.typing(S.openId);                  // at most every 2 s per room
}

async function onCreateRoom(ev) {
  ev.preventDefault();
  const members = [...document.querySelectorAll('#new-room-members input:checked')].map((i) => Number(i.value));
  if (!members.length) { showError('create room: pick at least one other user'); return; }
  let title = $('new-room-title').value.trim();
  if (!title) title = [S.me.id, ...members].map(nameOf).join(', ');
  let res;
  try {
    res = await api('POST', '/api/rooms', { kind: 'group', title, members });
  } catch (e) {
    showError('create room: ' + e.message);
    return;
  }
  if (res.status !== 201 || !res.body || typeof res.body.id !== 'number') {
    const b = res.body && typeof res.body === 'object' ? res.body : {};
    showError('create room: HTTP ' + res.status + ' ' + (b.code || '') + ' ' + (b.message || ''));
    return;
  }
  const r = room(res.body.id);
  r.title = title;
  r.memberIds = [S.me.id, ...members.filter((u) => u !== S.me.id)];
  r.members = r.memberIds.length;
  r.ptr.set(S.me.id, 0);
  S.client.resume({ [r.id]: 0 });             // a new room: seqs start at 1
  r.known_at = Date.now();
  $('new-room-title').value = '';
  for (const i of document.querySelectorAll('#new-room-members input')) i.checked = false;
  openRoom(r.id);
}

// --- start ---------------------------------------------------------------------

async function loadUsers() {
  const resp = await fetch('/demo/tokens.json', { cache: 'no-store' });
  if (!resp.ok) throw new Error('GET /demo/tokens.json: HTTP ' + resp.status);
  const data = await resp.json();
  const list = Array.isArray(data) ? data : data.users;
  S.users = list.map((u) => ({ id: Number(u.id), name: String(u.name), token: String(u.token) }));
  for (const u of S.users) S.names.set(u.id, u.name);
  if (S.me) {
    const fresh = S.users.find((u) => u.id === S.me.id);
    if (fresh) S.me.token = fresh.token;
  }
}

function login(id) {
  const u = S.users.find((x) => x.id === Number(id));
  if (!u) return;
  if (S.me && S.me.id !== u.id) {
    // Another user: start from a clean page.
    sessionStorage.setItem('minichat.user', String(u.id));
    location.reload();
    return;
  }
  if (S.me) return;
  S.me = Object.assign({}, u);
  sessionStorage.setItem('minichat.user', String(u.id));
  $('me').textContent = 'signed in as ' + u.name + ' (#' + u.id + ')';
  $('me').dataset.user = u.id;
  $('app').hidden = false;
  const box = $('new-room-members');
  box.replaceChildren();
  for (const o of S.users) {
    if (o.id === u.id) continue;
    box.append(el('label', {},
      el('input', { type: 'checkbox', value: o.id, 'data-testid': 'new-room-member-' + o.id }),
      ' ' + o.name));
  }
  renderPeople();
  renderRooms();
  connect();
}

async function main() {
  $('login').addEventListener('submit', (ev) => { ev.preventDefault(); login($('user-select').value); });
  $('composer-form').addEventListener('submit', onSubmitMessage);
  $('composer').addEventListener('input', onComposerInput);
  $('new-room').addEventListener('submit', onCreateRoom);
  $('more-rooms').addEventListener('click', () => loadRooms(S.roomsCursor));
  $('messages').addEventListener('scroll', () => {
    if (S.openId === null) return;
    const r = room(S.openId);
    if ($('messages').scrollTop < 60 && r.more && !r.loading && r.oldest) loadHistory(r, r.oldest);
    scheduleRead();
  });
  window.addEventListener('focus', scheduleRead);
  document.addEventListener('visibilitychange', scheduleRead);
  setInterval(renderTyping, 1000);

  try {
    await loadUsers();
  } catch (e) {
    showError('demo users unavailable (' + e.message + '): this page needs the dev stack (scripts/stack.sh)');
    return;
  }
  const sel = $('user-select');
  for (const u of S.users) sel.append(el('option', { value: u.id, text: u.name + ' (#' + u.id + ')' }));
  const want = new URLSearchParams(location.search).get('user') || sessionStorage.getItem('minichat.user');
  if (want && S.users.some((u) => u.id === Number(want))) {
    sel.value = want;
    login(want);
  }
  document.body.dataset.ready = '1';
}

main();
