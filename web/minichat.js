// MiniChat client library: one ES module, no build step, no dependencies.
//
// It speaks client protocol v1 (docs/protocol.md) over one WebSocket and
// hides the parts every app gets wrong on its own (docs/client.md):
//
// - Reconnect with jittered exponential backoff, honouring the close codes:
//   client bugs (1002, 1003, 1007), a ban (4003) and a disconnect by the
//   app's backend (4005) stop it until the app calls connect(); an expired
//   token (4001) reconnects only when `token` is a function that can mint a
//   new one; everything else (1001 reload, 1006 network, 1008 slow reader,
//   1009, 1011) reconnects with `?sid=`.
// - Per room it keeps `last`, the highest seq delivered with nothing missing
//   below it.  A `msg` is delivered once, in seq order: a duplicate
//   (seq <= last) is dropped, one above a hole is held back while the hole
//   is filled by `resume`, and after every reconnect every room it knows is
//   resumed from its `last`.
// - `send` keeps the message with its cid until the ack and sends it again
//   with the same cid after a reconnect, a timeout, `unavailable` or
//   `rate_limited`: the server stores it once (it deduplicates on the cid).
//
// Works in browsers and in Node 18+ (pass `WebSocket`, e.g. from `ws`).

// Do not reconnect: a client bug would loop, a ban keeps the user out, and
// after 4005 the app decides when the user comes back (protocol.md).
const FATAL_CLOSES = new Set([1002, 1003, 1007, 4003, 4005]);
const RESUME_BATCH = 100;                                  // rooms per resume request
const TYPING_EVERY_MS = 2000;                              // the server's typing interval

export class MiniChatError extends Error {
  constructor(code, message, frame) {
    super(code + (message ? ': ' + message : ''));
    this.name = 'MiniChatError';
    this.code = code;                 // protocol error code, or disconnected / timeout / closed
    this.frame = frame || null;       // the error frame as received, when there was one
  }
}

// A random 128-bit cid in hex, from the platform's CSPRNG when there is one.
function newCid() {
  const b = new Uint8Array(16);
  if (globalThis.crypto && globalThis.crypto.getRandomValues) globalThis.crypto.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export class MiniChatClient {
  // opts: url (ws:// or wss://, the /ws endpoint), token (a JWT string, or a
  // function ({attempt}) => string | Promise<string> called before every
  // connect), WebSocket (constructor; default globalThis.WebSocket), sid,
  // backoff {baseMs, maxMs}, requestTimeoutMs.
  constructor(opts) {
    if (!opts || typeof opts.url !== 'string') throw new TypeError('MiniChatClient: opts.url is required');
    if (typeof opts.token !== 'string' && typeof opts.token !== 'function') {
      throw new TypeError('MiniChatClient: opts.token must be a string or a function');
    }
    this.url = opts.url;
    this.token = opts.token;
    this.WebSocket = opts.WebSocket || globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') throw new TypeError('MiniChatClient: no WebSocket implementation');
    this.baseMs = (opts.backoff && opts.backoff.baseMs) || 500;
    this.maxMs = (opts.backoff && opts.backoff.maxMs) || 15000;
    this.requestTimeoutMs = opts.requestTimeoutMs || 15000;
    this.sid = opts.sid || null;      // kept for ?sid= on every reconnect
    this.user = null;                 // from hello
    this.node = null;
    this.state = 'idle';              // idle, connecting, online, offline (waiting to retry), closed
    this.ws = null;
    this.attempt = 0;                 // failed connects since the last hello
    this.timer = null;                // reconnect timer
    this.opening = false;             // a connect is waiting for its token
    this.closing = false;             // close() or a close that must not be retried
    this.bannedUntil = null;          // from a `banned` error, for the 4003 close
    this.nextId = 1;
    this.pending = new Map();         // request id -> {resolve, reject, timer, each}
    this.outbox = new Map();          // cid -> {room, body, cid, resolve, reject, timer, inflight}
    this.reads = new Map();           // room -> highest seq whose `read` is not confirmed
    this.rooms = new Map();           // room -> {last, epoch, ahead: Map seq -> frame|null, resuming}
    this.typingAt = new Map();        // room -> ms of the last typing sent
    this.handlers = new Map();        // event -> Set of functions
  }

  // --- events ---------------------------------------------------------------

  // Subscribe; returns a function that unsubscribes.
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const set = this.handlers.get(event);
    if (set) set.delete(fn);
  }

  emit(event, data) {
    const set = this.handlers.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(data);
      } catch (e) {
        // An app's handler must not break the library's state.
        setTimeout(() => { throw e; });
      }
    }
  }

  setState(state, detail) {
    this.state = state;
    this.emit('state', Object.assign({ state }, detail || {}));
  }

  // --- connection -------------------------------------------------------------

  // Open the connection (again, after a fatal close or close()).
  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.closing = false;
    if (this.ws || this.opening) return;
    this.open();
  }

  async open() {
    this.setState('connecting', { attempt: this.attempt });
    let token;
    this.opening = true;              // while the token function runs: connect() does nothing
    try {
      token = typeof this.token === 'function' ? await this.token({ attempt: this.attempt }) : this.token;
    } catch (e) {
      this.emit('error', new MiniChatError('unauthorized', 'token: ' + e.message));
      return this.retry({});
    } finally {
      this.opening = false;
    }
    if (this.closing || this.ws) return;
    let url = this.url;
    if (this.sid) url += (url.includes('?') ? '&' : '?') + 'sid=' + encodeURIComponent(this.sid);
    let ws;
    try {
      // The token travels as a subprotocol entry, not in the URL (URLs are logged).
      ws = new this.WebSocket(url, ['minichat.v1', 'bearer.' + token]);
    } catch (e) {
      this.emit('error', new MiniChatError('bad_request', 'WebSocket: ' + e.message));
      return this.retry({});
    }
    this.ws = ws;
    ws.onmessage = (ev) => {
      if (this.ws !== ws || typeof ev.data !== 'string') return;
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f && typeof f === 'object' && typeof f.op === 'string') this.onFrame(f);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onDisconnect(ev.code, ev.reason || '');
    };
    ws.onerror = () => {};            // a close event follows
  }

  // Close for good (until connect() is called again); pending sends and
  // requests fail with `closed`.
  close() {
    this.closing = true;
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) try { ws.close(1000); } catch (e) { /* already closing */ }
    this.failPending('closed');
    for (const out of this.outbox.values()) {
      clearTimeout(out.timer);
      out.reject(new MiniChatError('closed', 'the client was closed'));
    }
    this.outbox.clear();
    this.setState('closed', { code: 1000, reason: 'closed by the app' });
  }

  // Drop the connection as a network failure would (the client reconnects).
  // For tests and for apps that detect a dead network themselves.
  drop() {
    if (this.ws) this.ws.close(4000, 'dropped by the client');
  }

  failPending(code) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new MiniChatError(code, 'connection closed'));
    }
    this.pending.clear();
    for (const out of this.outbox.values()) out.inflight = false;
    for (const r of this.rooms.values()) r.resuming = false;
  }

  onDisconnect(code, reason) {
    this.failPending('disconnected');
    if (this.closing) return;
    const tokenExpired = code === 4001 && typeof this.token !== 'function';
    if (FATAL_CLOSES.has(code) || tokenExpired) {
      this.closing = true;
      this.setState('closed', { code, reason, until: code === 4003 ? this.bannedUntil : undefined });
      return;
    }
    this.retry({ code, reason });
  }

  // Jittered exponential backoff: base * 2^attempt, capped, times 0.5..1.
  retry(detail) {
    if (this.closing) return;
    const cap = Math.min(this.maxMs, this.baseMs * Math.pow(2, this.attempt));
    const delay = Math.round(cap * (0.5 + Math.random() / 2));
    this.attempt++;
    this.setState('offline', Object.assign({ delay }, detail));
    this.timer = setTimeout(() => { this.timer = null; this.open(); }, delay);
  }

  raw(obj) {
    if (!this.ws || this.state !== 'online') return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  // Send a request with a fresh id.  Resolves with the reply; rejects with a
  // MiniChatError for an error frame, a timeout or a disconnect.  A request
  // answered by several frames (resume) passes `each`: it sees every frame
  // and returns true at the last one; the promise then resolves.
  request(obj, opts) {
    const id = this.nextId++;
    const frame = Object.assign({}, obj, { id });
    return new Promise((resolve, reject) => {
      if (!this.raw(frame)) {
        reject(new MiniChatError('disconnected', 'not connected'));
        return;
      }
      const ms = (opts && opts.timeoutMs) || this.requestTimeoutMs;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new MiniChatError('timeout', 'no answer within ' + ms + ' ms'));
      }, ms);
      this.pending.set(id, { resolve, reject, timer, each: opts && opts.each });
    });
  }

  // --- incoming frames --------------------------------------------------------

  onFrame(f) {
    const p = f.id !== undefined && f.op !== 'msg' ? this.pending.get(f.id) : undefined;
    if (p) {
      const complete = p.each ? p.each(f) : true;
      if (!complete) return;
      this.pending.delete(f.id);
      clearTimeout(p.timer);
      if (f.op === 'error' && !p.each) p.reject(new MiniChatError(f.code, f.message, f));
      else p.resolve(f);
      return;
    }
    switch (f.op) {
      case 'hello': return this.onHello(f);
      case 'msg': return this.onMsg(f);
      case 'read': case 'typing': case 'presence': return this.emit(f.op, f);
      case 'error':
        if (f.id !== undefined) return;   // the reply to a request that timed out
        if (f.code === 'banned') this.bannedUntil = f.until === undefined ? null : f.until;
        return this.emit('error', new MiniChatError(f.code, f.message, f));
      default: return;                // replies that came after their timeout, unknown ops
    }
  }

  onHello(f) {
    this.sid = f.sid || this.sid;
    this.user = f.user;
    this.node = f.node;
    this.attempt = 0;
    this.setState('online', { sid: this.sid, node: this.node, resumed: !!f.resumed });
    this.emit('hello', f);
    this.resumeRooms([...this.rooms.keys()]);
    for (const out of this.outbox.values()) this.transmit(out);
    for (const [room, seq] of this.reads) this.sendRead(room, seq);
  }

  room(id) {
    let r = this.rooms.get(id);
    if (!r) {
      r = { last: null, epoch: '', ahead: new Map(), resuming: false };
      this.rooms.set(id, r);
    }
    return r;
  }

  onMsg(f) {
    if (!Number.isSafeInteger(f.room) || !Number.isSafeInteger(f.seq)) return;
    const r = this.room(f.room);
    if (r.last === null) r.last = f.seq - 1;    // a room first seen live starts here
    // Our own message whose ack was lost (a replay after a reconnect, or a
    // repair): it answers the send, it is not a new message for the app.
    const out = f.from === this.user && f.cid !== undefined ? this.outbox.get(f.cid) : undefined;
    if (out && out.room === f.room) this.settle(out, { room: f.room, cid: f.cid, seq: f.seq, ts: f.ts });
    else if (!this.place(r, f.seq, f)) return;
    if (r.ahead.size > 0 && !r.resuming) this.resumeRooms([f.room]);   // a hole below f.seq
  }

  // Put seq into the room's order and deliver whatever became contiguous.
  // frame null: seq is known (our own ack) and has nothing to deliver.
  // Returns false for a seq already delivered or held.
  place(r, seq, frame) {
    if (seq <= r.last || r.ahead.has(seq)) return false;
    r.ahead.set(seq, frame);
    this.drain(r);
    return true;
  }

  drain(r) {
    while (r.ahead.has(r.last + 1)) {
      const f = r.ahead.get(r.last + 1);
      r.ahead.delete(r.last + 1);
      r.last++;
      if (f) this.emit('message', f);
    }
  }

  // --- resume -----------------------------------------------------------------

  // Declare rooms the app holds, {room: seq} or {room: {seq, epoch}} (seq:
  // the last one it has, e.g. a history page's last_seq), and resume them:
  // messages after seq arrive as `message` events.  A room the client
  // already delivered further keeps its own position.
  resume(rooms) {
    const ids = [];
    for (const [k, v] of Object.entries(rooms || {})) {
      const id = Number(k);
      const seq = typeof v === 'object' && v !== null ? v.seq : v;
      if (!Number.isSafeInteger(id) || id <= 0 || !Number.isSafeInteger(seq) || seq < 0) {
        throw new TypeError('resume: bad room or seq: ' + k);
      }
      const r = this.room(id);
      if (r.last === null || seq > r.last) {
        r.last = seq;
        for (const s of [...r.ahead.keys()]) if (s <= seq) r.ahead.delete(s);
        this.drain(r);
      }
      if (v && typeof v === 'object' && typeof v.epoch === 'string') r.epoch = v.epoch;
      ids.push(id);
    }
    this.resumeRooms(ids);
  }

  // Where the client is in a room: {seq, epoch} (null for a room it does not know).
  position(room) {
    const r = this.rooms.get(room);
    return r && r.last !== null ? { seq: r.last, epoch: r.epoch } : null;
  }

  // Rooms the app should no longer follow (e.g. it left them).
  forget(room) {
    this.rooms.delete(room);
  }

  resumeRooms(ids) {
    if (this.state !== 'online') return;             // the next hello resumes them all
    ids = ids.filter((id) => { const r = this.rooms.get(id); return r && r.last !== null && !r.resuming; });
    for (let i = 0; i < ids.length; i += RESUME_BATCH) this.resumeBatch(ids.slice(i, i + RESUME_BATCH));
  }

  // One resume request.  The server answers each room with `resumed` or an
  // error, and its errors do not name the room: rooms a batch left without
  // `resumed` are resumed again one per request, after a pause, so that an
  // error names its room.
  resumeBatch(ids) {
    const want = {};
    for (const id of ids) {
      const r = this.rooms.get(id);
      r.resuming = true;
      want[id] = r.epoch ? { seq: r.last, epoch: r.epoch } : r.last;
    }
    const open = new Set(ids);
    let answers = 0;
    let err = null;
    const each = (f) => {
      answers++;
      if (f.op === 'resumed' && open.has(f.room)) {
        open.delete(f.room);
        this.onResumed(f);
      } else if (f.op === 'error') {
        err = f;
        if (f.code === 'bad_request' || f.code === 'rate_limited') return true;   // the whole request
      }
      return answers >= ids.length;
    };
    this.request({ op: 'resume', rooms: want }, { each }).then(
      () => this.afterResume(ids, open, err),
      (e) => this.afterResume(ids, open, e.code === 'timeout' ? err || {} : null));
  }

  // err null: the connection went (the next hello resumes everything).
  afterResume(ids, open, err) {
    for (const id of open) { const r = this.rooms.get(id); if (r) r.resuming = false; }
    if (!open.size || !err) return;
    const final = err.code === 'bad_request' || (ids.length === 1 && (err.code === 'forbidden' || err.code === 'not_found'));
    if (final) {
      if (ids.length === 1) this.rooms.delete(ids[0]);
      this.emit('error', new MiniChatError(err.code, 'resume of room ' + ids.join(', ') + ': ' + err.message,
        Object.assign({ room: ids[0] }, err)));
      return;
    }
    setTimeout(() => { for (const id of open) this.resumeRooms([id]); }, err.retry_after_ms || 1000);
  }

  onResumed(f) {
    const r = this.rooms.get(f.room);
    if (!r) return;
    r.resuming = false;
    if (typeof f.epoch === 'string') r.epoch = f.epoch;
    const from = r.last;
    if (f.recovered === false && Number.isSafeInteger(f.seq)) {
      // Nothing was replayed: the app pages history below seq + 1.  Held
      // messages at or below seq are in that history; later ones follow.
      if (f.seq > r.last) r.last = f.seq;
      for (const s of [...r.ahead.keys()]) if (s <= r.last) r.ahead.delete(s);
    }
    this.drain(r);
    this.emit('resumed', { room: f.room, recovered: f.recovered !== false, from, seq: f.seq, epoch: r.epoch });
    if (r.ahead.size > 0) this.resumeRooms([f.room]);
  }

  // --- sending ----------------------------------------------------------------

  // Post a message.  Resolves with the ack {room, seq, cid, ts} once the
  // server has made it durable; retried with the same cid until then (so it
  // is stored once).  Rejects on an error retrying cannot fix (forbidden,
  // not_found, bad_request, banned) or on close().  opts.cid: your own id.
  send(room, body, opts) {
    if (!Number.isSafeInteger(room) || room <= 0) return Promise.reject(new TypeError('send: bad room'));
    if (typeof body !== 'string' || body === '') return Promise.reject(new TypeError('send: empty body'));
    const cid = (opts && opts.cid) || newCid();
    if (this.outbox.has(cid)) return Promise.reject(new TypeError('send: cid already pending: ' + cid));
    return new Promise((resolve, reject) => {
      const out = { room, body, cid, resolve, reject, timer: null, inflight: false };
      this.outbox.set(cid, out);
      this.transmit(out);
    });
  }

  // Messages sent and not acked yet: [{room, body, cid}].
  unacked() {
    return [...this.outbox.values()].map(({ room, body, cid }) => ({ room, body, cid }));
  }

  transmit(out) {
    if (out.inflight || this.state !== 'online' || !this.outbox.has(out.cid)) return;
    clearTimeout(out.timer);
    out.inflight = true;
    this.request({ op: 'send', room: out.room, cid: out.cid, body: out.body }).then((ack) => {
      out.inflight = false;
      this.settle(out, ack);
    }, (e) => {
      out.inflight = false;
      if (!this.outbox.has(out.cid)) return;
      if (e.code === 'disconnected') return;                        // the next hello sends it again
      if (e.code === 'timeout') return this.transmit(out);
      if (e.code === 'unavailable' || e.code === 'rate_limited') {
        const ms = (e.frame && e.frame.retry_after_ms) || 1000;
        out.timer = setTimeout(() => this.transmit(out), ms);
        return;
      }
      this.outbox.delete(out.cid);
      out.reject(e);
    });
  }

  settle(out, ack) {
    if (!this.outbox.has(out.cid)) return;
    this.outbox.delete(out.cid);
    clearTimeout(out.timer);
    // The room is followed from here on (resumed after a reconnect); the
    // acked seq itself is not delivered back as a message.
    const r = this.room(out.room);
    if (r.last === null) r.last = ack.seq - 1;
    this.place(r, ack.seq, null);
    out.resolve({ room: ack.room, seq: ack.seq, cid: ack.cid, ts: ack.ts });
  }

  // --- read and typing ----------------------------------------------------------

  // Move my read pointer to seq (forward only).  Resolves with the server's
  // pointer; a read that did not get through is sent again after the next
  // hello (a repeat is harmless).
  read(room, seq) {
    if (!Number.isSafeInteger(room) || room <= 0 || !Number.isSafeInteger(seq) || seq < 0) {
      return Promise.reject(new TypeError('read: bad room or seq'));
    }
    if ((this.reads.get(room) || 0) < seq) this.reads.set(room, seq);
    return this.sendRead(room, seq);
  }

  sendRead(room, seq) {
    return this.request({ op: 'read', room, seq }).then((ok) => {
      if (this.reads.get(room) <= seq) this.reads.delete(room);
      return ok.seq;
    }, (e) => {
      if (e.code !== 'disconnected' && e.code !== 'timeout' && this.reads.get(room) <= seq) this.reads.delete(room);
      throw e;
    });
  }

  // Tell the room I am typing; at most once per 2 s per room (the server
  // would drop the rest).  Returns true when a `typing` went out.
  typing(room) {
    const now = Date.now();
    if (this.state !== 'online' || now - (this.typingAt.get(room) || 0) < TYPING_EVERY_MS) return false;
    this.typingAt.set(room, now);
    this.request({ op: 'typing', room }, { timeoutMs: 5000 }).catch((e) => {
      if (e.code !== 'disconnected' && e.code !== 'timeout') this.emit('error', e);
    });
    return true;
  }

  // --- other requests -----------------------------------------------------------

  // A page of a room's history (newest first); see protocol.md "history".
  history(room, opts) {
    const req = { op: 'history', room };
    if (opts && opts.before) req.before = opts.before;
    if (opts && opts.limit) req.limit = opts.limit;
    return this.request(req);
  }

  // A page of my rooms by last activity; see protocol.md "rooms".
  roomList(opts) {
    const req = { op: 'rooms' };
    if (opts && opts.limit) req.limit = opts.limit;
    if (opts && opts.cursor) req.cursor = opts.cursor;
    return this.request(req);
  }
}
