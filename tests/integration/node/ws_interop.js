// The chat protocol spoken by Node's `ws` (npm), for
// tests/integration/test_interop.py.
//
// One run plays a whole session against the dev stack with permessage-deflate
// offered or not (`ws`'s perMessageDeflate), and prints what it saw as one
// JSON report on stdout (tests/integration/interop_websockets.py plays the
// same session with Python websockets and reports the same fields); the
// pytest asserts on the report, so this script
// judges nothing itself beyond "the frame I waited for came in time".  A
// frame that never comes, or a connection that fails where it should not,
// throws: the script exits 1 with the reason on stderr.
//
// Usage: node ws_interop.js CONFIG_JSON, where CONFIG_JSON has
//   ws          the path of the ws package (.cache/node/ws/node_modules/ws)
//   nodes       {"a": "127.0.0.1:PORT", "b": "127.0.0.1:PORT"}
//   deflate     true: offer permessage-deflate; false: offer nothing
//   users       {"a": {"id", "token"}, "b": {...}}  (a creates the room)
//   short_token a token of user b that expires within a few seconds
//   max_message minichat_max_message_size of the stack, in bytes
//
// Server frames are also read from the raw socket (a second 'data'
// listener beside ws's own) to see their RSV1 bit: ws hands out messages
// already inflated.  The server never fragments, so the n-th data frame on
// the wire is the n-th message ws emits.

'use strict';

const cfg = JSON.parse(process.argv[2]);
const { WebSocket } = require(cfg.ws);

const WAIT_MS = 10000;
const PROTOCOL = 'minichat.v1';

// A connection: its messages as parsed JSON, the frames seen on the wire,
// and waiters for a message matching a predicate.
class Conn {
  constructor(name, url, protocols, headers) {
    this.name = name;
    this.frames = [];        // {opcode, fin, rsv1, length} of every server frame
    this.messages = [];      // {json, bytes} of every data message, in order
    this.taken = new Set();  // indexes of messages handed out by expect()
    this.waiters = [];
    this.pings = [];
    this.pongs = [];
    this.closed = null;      // {code, reason}
    this.handshake = null;   // the 101's headers
    this.refused = null;     // the status of a refused upgrade
    this.ws = new WebSocket(url, protocols, {
      headers,
      perMessageDeflate: cfg.deflate,
      maxPayload: 4 * cfg.max_message,
      handshakeTimeout: WAIT_MS,
    });
    this.ws.on('upgrade', (res) => { this.handshake = res.headers; });
    this.ws.on('unexpected-response', (req, res) => {
      this.refused = res.statusCode;
      res.resume();
      req.destroy();
      this.wake();
    });
    this.ws.on('open', () => this.watchFrames(this.ws._socket));
    this.ws.on('message', (data, isBinary) => {
      const text = data.toString();
      this.messages.push({ json: isBinary ? null : JSON.parse(text), bytes: data.length });
      this.wake();
    });
    this.ws.on('ping', (data) => { this.pings.push(data.toString()); this.wake(); });
    this.ws.on('pong', (data) => { this.pongs.push(data.toString()); this.wake(); });
    this.ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; this.wake(); });
    this.ws.on('error', (err) => { this.error = String(err.message || err); this.wake(); });
  }

  // Parses frame heads out of the raw byte stream (the server's frames are
  // never masked); only the heads are kept.
  watchFrames(socket) {
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (buf.length < 2) return;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          off = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          off = 10;
        }
        if (buf.length < off + len) return;
        this.frames.push({ opcode: buf[0] & 0x0f, fin: !!(buf[0] & 0x80), rsv1: !!(buf[0] & 0x40), length: len });
        buf = buf.subarray(off + len);
      }
    });
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  // Resolves when cond() returns something truthy; rejects after WAIT_MS.
  until(cond, what) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${this.name}: no ${what} within ${WAIT_MS} ms; messages: ` +
          JSON.stringify(this.messages.slice(-8).map((m) => m.json)) + ` closed: ${JSON.stringify(this.closed)}` +
          ` error: ${this.error}`));
      }, WAIT_MS);
      const check = () => {
        let got;
        try {
          got = cond();
        } catch (e) {
          clearTimeout(timer);
          reject(e);
          return;
        }
        if (got) {
          clearTimeout(timer);
          resolve(got);
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }

  opened() {
    return this.until(() => {
      if (this.ws.readyState === WebSocket.OPEN) return true;
      if (this.refused || this.closed || this.error) {
        throw new Error(`${this.name}: upgrade failed: ${this.refused || this.error || JSON.stringify(this.closed)}`);
      }
      return false;
    }, 'open');
  }

  // The first message not handed out yet whose JSON has these fields.
  expect(fields) {
    const want = Object.entries(fields);
    return this.until(() => {
      for (let i = 0; i < this.messages.length; i++) {
        const m = this.messages[i].json;
        if (!this.taken.has(i) && m && want.every(([k, v]) => m[k] === v)) {
          this.taken.add(i);
          return m;
        }
      }
      return null;
    }, JSON.stringify(fields));
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  closedWith() {
    return this.until(() => this.closed, 'close');
  }

  // {op, seq, bytes, rsv1} of every data message, with its frame's RSV1.
  wire() {
    const data = this.frames.filter((f) => f.opcode === 1 || f.opcode === 2);
    return this.messages.map((m, i) => ({
      op: m.json ? m.json.op : null,
      seq: m.json && m.json.seq !== undefined ? m.json.seq : null,
      bytes: m.bytes,
      rsv1: data[i] ? data[i].rsv1 : null,
    }));
  }

  summary() {
    return {
      protocol: this.ws.protocol,
      extensions: this.handshake ? this.handshake['sec-websocket-extensions'] || null : null,
      negotiated: this.ws.extensions,
      wire: this.wire(),
    };
  }
}

function wsUrl(node, query) {
  return `ws://${cfg.nodes[node]}/ws${query ? '?' + query : ''}`;
}

async function rest(method, path, token, body) {
  const res = await fetch(`http://${cfg.nodes.a}${path}`, {
    method,
    headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

async function connected(conn, userId) {
  await conn.opened();
  const hello = await conn.expect({ op: 'hello' });
  if (hello.user !== userId) throw new Error(`${conn.name}: hello for ${hello.user}, not ${userId}`);
  return hello;
}

async function main() {
  const A = cfg.users.a;
  const B = cfg.users.b;
  const report = { auth: {}, closes: {} };

  // A silent connection, opened first: the server pings it after
  // minichat_ping_interval of silence, and ws answers with a pong itself.
  const silent = new Conn('silent', wsUrl('b', 'token=' + encodeURIComponent(B.token)), [PROTOCOL]);
  await connected(silent, B.id);
  // A connection whose token expires meanwhile: it gets an error and 4001.
  const expiring = new Conn('expiring', wsUrl('b'), [PROTOCOL, 'bearer.' + cfg.short_token]);
  await connected(expiring, B.id);

  // The three ways of carrying the token.
  const aHeader = new Conn('a/header', wsUrl('a'), [PROTOCOL], { Authorization: 'Bearer ' + A.token });
  const aProto = new Conn('a/subprotocol', wsUrl('a'), [PROTOCOL, 'bearer.' + A.token]);
  let b = new Conn('b/query', wsUrl('b', 'token=' + encodeURIComponent(B.token)), [PROTOCOL]);
  for (const [how, conn, user] of [['header', aHeader, A], ['subprotocol', aProto, A], ['query', b, B]]) {
    const hello = await connected(conn, user.id);
    report.auth[how] = { user: hello.user, node: hello.node, protocol: conn.ws.protocol,
      extensions: conn.summary().extensions };
  }

  // A room of A and B, made over REST.
  const created = await rest('POST', '/api/rooms', A.token, { kind: 'group', title: 'node ws', members: [B.id] });
  const room = created.body.id;
  report.room = created;

  // Send, and receive on the other node and on the sender's other device.
  const small = 'hello from node ws';
  const large = 'compress me please '.repeat(40);
  const acks = [];
  for (const [i, body] of [small, large].entries()) {
    aHeader.send({ op: 'send', id: 10 + i, room, cid: `node-${process.pid}-${i}`, body });
    acks.push(await aHeader.expect({ op: 'ack', id: 10 + i }));
  }
  report.acks = acks.map((a) => a.seq);
  report.received = [];
  for (const [i, body] of [small, large].entries()) {
    const mb = await b.expect({ op: 'msg', room, seq: acks[i].seq });
    const ma = await aProto.expect({ op: 'msg', room, seq: acks[i].seq });
    report.received.push({ seq: acks[i].seq, b: mb.body === body, other_device: ma.body === body, from: mb.from });
  }

  // B leaves with 1000 (the server echoes the client's code), misses two
  // messages, comes back with its sid and resumes.
  const sid = b.messages[0].json.sid;
  report.b_wire = b.summary();
  b.ws.close(1000, 'bye');
  report.closes.normal = await b.closedWith();
  const missed = [];
  for (let i = 0; i < 2; i++) {
    aHeader.send({ op: 'send', id: 20 + i, room, cid: `node-${process.pid}-missed-${i}`, body: `missed ${i}` });
    missed.push((await aHeader.expect({ op: 'ack', id: 20 + i })).seq);
  }
  b = new Conn('b/resumed', wsUrl('b', `token=${encodeURIComponent(B.token)}&sid=${sid}`), [PROTOCOL]);
  const again = await connected(b, B.id);
  b.send({ op: 'resume', id: 30, rooms: { [room]: acks[1].seq } });
  const resumed = await b.expect({ op: 'resumed', id: 30, room });
  const replayed = b.messages.map((m) => m.json).filter((m) => m.op === 'msg' && m.room === room).map((m) => m.seq);
  report.resume = { sid_kept: again.sid === sid, resumed_session: again.resumed, missed, replayed,
    recovered: resumed.recovered, seq: resumed.seq };

  // A message near minichat_max_message_size: the send request's JSON is
  // 64 bytes short of the limit.
  const shell = JSON.stringify({ op: 'send', id: 40, room, cid: `node-${process.pid}-big`, body: '' });
  const bigBody = 'x'.repeat(cfg.max_message - 64 - shell.length);
  aHeader.send({ op: 'send', id: 40, room, cid: `node-${process.pid}-big`, body: bigBody });
  const bigAck = await aHeader.expect({ op: 'ack', id: 40 });
  const bigMsg = await b.expect({ op: 'msg', room, seq: bigAck.seq });
  report.big = { request_bytes: shell.length + bigBody.length, delivered: bigMsg.body === bigBody, seq: bigAck.seq };
  report.b_resumed_wire = b.summary();

  // A ping of the client's, answered with its payload.
  aHeader.ws.ping('interop-ping');
  await aHeader.until(() => aHeader.pongs.length, 'pong');
  report.pong = aHeader.pongs;

  // Close codes the server sends.
  const tooBig = new Conn('too-big', wsUrl('a'), [PROTOCOL], { Authorization: 'Bearer ' + A.token });
  await connected(tooBig, A.id);
  tooBig.send('{"op":"send","body":"' + 'y'.repeat(cfg.max_message) + '"}');
  report.closes.too_big = await tooBig.closedWith();

  const binary = new Conn('binary', wsUrl('a'), [PROTOCOL, 'bearer.' + A.token]);
  await connected(binary, A.id);
  binary.ws.send(Buffer.from('{"op":"typing"}'));
  report.closes.binary = await binary.closedWith();

  const expired = await expiring.expect({ op: 'error', code: 'unauthorized' });
  report.closes.expired = Object.assign({ error: expired.message }, await expiring.closedWith());

  const refused = new Conn('bad-token', wsUrl('a'), [PROTOCOL, 'bearer.not-a-jwt']);
  await refused.until(() => refused.refused, 'a refused upgrade');
  report.closes.bad_token_status = refused.refused;

  // The silent connection was pinged (ws answers with a pong by itself)
  // and is still open.
  await silent.until(() => silent.pings.length, 'a ping from the server');
  report.server_ping = { pings: silent.pings.length, open: silent.ws.readyState === WebSocket.OPEN };

  for (const c of [aHeader, aProto, b, silent]) c.ws.close(1000);
  await Promise.all([aHeader, aProto, b, silent].map((c) => c.closedWith()));
  report.a_wire = aHeader.summary();
  process.stdout.write(JSON.stringify(report) + '\n');
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
