// chat-room.js — the edge-chat-demo room in JavaScript, written against
// durable.js. It behaves exactly as the Rust room (guests/chat-room), whose
// crate doc is the protocol's reference:
//
// * An upgrade is accepted with no tags and the attachment `{"ip": ...}`;
//   `GET .../history?limit=N` answers the last N messages (default 100, at
//   most 1000) as a JSON array; any other request answers 400.
// * The first JSON frame of an unnamed socket joins: `name` (a string; a
//   number or bool in its string form; missing or null → "anonymous"; over 32
//   characters → `{"error":"Name too long."}` and close 1009). The newcomer
//   gets `{"joined":X}` for each member, the last 100 messages, everyone gets
//   `{"joined":name}`, the newcomer `{"ready":true}`. Its attachment becomes
//   `{"ip","name"}` and it gets the tag `member`.
// * Later frames are `{"message": ...}` (≤ 256 characters), checked with the
//   `rate-limiter` object named by the client IP (a failed call allows;
//   `RATE_LIMIT = "off"` skips it), stored under `msg:<16-digit timestamp>`
//   with strictly increasing timestamps, and broadcast to every member.
// * A named socket's close sends `{"quit":name}` to the others; `ping` is
//   answered `pong` by the host (the auto-response set in the constructor).
//
// Guest memory holds only caches (the newest timestamp, the roster), so a
// room evicted between two events behaves as one that never was.

import { DurableObject, WebSocketRequestResponsePair, serve } from './durable.js';

const PING = 'ping';
const PONG = 'pong';
const MEMBER = 'member';
const MSG_PREFIX = 'msg:';
const MAX_NAME_CHARS = 32;
const MAX_MESSAGE_CHARS = 256;
const JOIN_HISTORY = 100;
const DEFAULT_HISTORY = 100;
const MAX_HISTORY = 1000;
const U32_MAX = 4294967295;

/// Characters as Rust counts them (Unicode scalar values, not UTF-16 units).
const chars = (s) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

/// The storage key of a message: zero-padded so keys sort by time.
const messageKey = (timestamp) => MSG_PREFIX + String(timestamp).padStart(16, '0');

/// The part of the path after `/api/room/<name>/` (or the last segment of
/// any other path), without a trailing slash.
function subPath(path) {
  const trimmed = path.replace(/\/+$/, '');
  if (trimmed.startsWith('/api/room/')) {
    const rest = trimmed.slice('/api/room/'.length);
    const slash = rest.indexOf('/');
    return slash < 0 ? '' : rest.slice(slash + 1);
  }
  return trimmed.slice(trimmed.lastIndexOf('/') + 1);
}

/// A JSON scalar as the Rust room turns it into text (strings as they are,
/// numbers and bools in their string form); undefined for anything else.
function scalarText(v) {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return undefined;
}

const textResponse = (status, text) =>
  new Response(text, {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8' },
  });

export class ChatRoom extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    /// The newest message's timestamp; undefined until read from storage
    /// (on the first message, so that a join or a leave reads no storage).
    this.lastTimestamp = undefined;
    /// The members in join order, `[ws, name]`: a cache of the sockets' tags
    /// and attachments, built on first use.
    this.roster = undefined;
    /// Whether the class var turned the rate limiter off.
    this.limiterOff = env.RATE_LIMIT === 'off';
    // Keep-alive pings are answered by the host, without waking the room.
    try {
      ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING, PONG));
    } catch (e) {
      console.warn(`setting the ping auto-response: ${e.message}`);
    }
  }

  fetch(request) {
    if (this.ctx.isWebSocketUpgrade(request)) {
      const ws = this.ctx.acceptWebSocket(request, []);
      ws.serializeAttachment({ ip: request.headers.get('cf-connecting-ip') ?? '' });
      return ws;
    }
    const url = new URL(request.url);
    if (request.method === 'GET' && subPath(url.pathname) === 'history') {
      return this.history(url.search.slice(1));
    }
    return textResponse(400, 'expected websocket');
  }

  webSocketMessage(ws, message) {
    if (typeof message !== 'string') {
      this.sendError(ws, 'Binary frames are not supported.');
      return;
    }
    if (message === PING) {
      // Normally answered by the host (auto-response); kept for safety.
      this.send(ws, PONG);
      return;
    }
    let data;
    try {
      data = JSON.parse(message);
    } catch (e) {
      this.sendError(ws, `Malformed JSON: ${e.message}`);
      return;
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      this.sendError(ws, 'Malformed JSON: expected a JSON object');
      return;
    }
    const session = this.readSession(ws);
    if (!session) return;
    if (typeof session.name !== 'string') this.join(ws, session, data);
    else this.chat(ws, session.ip, session.name, data);
  }

  webSocketClose(ws, _code, _reason) {
    if (this.roster) this.roster = this.roster.filter(([member]) => member !== ws);
    const session = this.readSession(ws);
    if (session && typeof session.name === 'string') {
      this.ctx.broadcast(JSON.stringify({ quit: session.name }), {
        tag: MEMBER,
        except: [ws],
      });
    }
  }

  /// The first JSON frame of an unnamed socket: joins it to the room.
  join(ws, session, data) {
    let name;
    if (data.name === undefined || data.name === null) name = 'anonymous';
    else name = scalarText(data.name);
    if (name === undefined) {
      this.sendError(ws, 'Name must be a string.');
      return;
    }
    if (chars(name) > MAX_NAME_CHARS) {
      this.sendError(ws, 'Name too long.');
      try {
        ws.close(1009, 'Name too long.');
      } catch (e) {
        console.warn(`closing socket ${ws.id}: ${e.message}`);
      }
      return;
    }

    // Who is already here, in join order.
    for (const [member, other] of this.members()) {
      if (member !== ws) this.send(ws, JSON.stringify({ joined: other }));
    }
    // What was said before, oldest first.
    try {
      for (const message of this.lastMessages(JOIN_HISTORY)) this.send(ws, message);
    } catch (e) {
      console.error(`loading history: ${e.message}`);
    }

    try {
      ws.serializeAttachment({ ip: session.ip, name });
      this.ctx.setTags(ws, [MEMBER]);
    } catch (e) {
      console.warn(`saving the session of socket ${ws.id}: ${e.message}`);
      this.sendError(ws, 'Could not join.');
      return;
    }
    this.members().push([ws, name]);
    this.ctx.broadcast(JSON.stringify({ joined: name }), { tag: MEMBER });
    this.send(ws, JSON.stringify({ ready: true }));
  }

  /// The roster, built from the host's sockets on first use.
  members() {
    if (!this.roster) {
      this.roster = [];
      for (const member of this.ctx.getWebSockets(MEMBER)) {
        const session = this.readSession(member);
        if (session && typeof session.name === 'string') this.roster.push([member, session.name]);
      }
    }
    return this.roster;
  }

  /// A JSON frame from a member: a chat message.
  chat(ws, ip, name, data) {
    if (data.message === undefined || data.message === null) {
      this.sendError(ws, 'Expected {"message": ...}.');
      return;
    }
    if (!this.rateLimitAllows(ip)) {
      this.sendError(ws, 'Your IP is being rate-limited, please try again later.');
      return;
    }
    const message = scalarText(data.message);
    if (message === undefined) {
      this.sendError(ws, 'Message must be a string.');
      return;
    }
    if (chars(message) > MAX_MESSAGE_CHARS) {
      this.sendError(ws, 'Message too long.');
      return;
    }

    // First message since the instance started: read the newest once.
    const last = this.lastTimestamp ?? this.loadLastTimestamp();
    const now = Date.now();
    const timestamp = last === undefined ? now : Math.max(now, last + 1);
    const body = JSON.stringify({ name, message, timestamp });
    try {
      this.storage.put(messageKey(timestamp), { name, message, timestamp });
    } catch (e) {
      console.error(`storing message: ${e.message}`);
      this.sendError(ws, 'Could not store message.');
      return;
    }
    this.lastTimestamp = timestamp;
    this.ctx.broadcast(body, { tag: MEMBER });
  }

  /// Asks the client IP's rate limiter whether it may send; fails open.
  rateLimitAllows(ip) {
    if (this.limiterOff) return true;
    let answer;
    try {
      answer = this.ctx.call('rate-limiter', ip, 'check');
    } catch (e) {
      console.warn(`rate limiter for ${ip} failed (${e.message}); allowing`);
      return true;
    }
    try {
      const verdict = JSON.parse(new TextDecoder().decode(answer));
      if (typeof verdict.allowed !== 'boolean') throw new Error('no "allowed"');
      return verdict.allowed;
    } catch (e) {
      console.warn(`rate limiter for ${ip} answered nonsense (${e.message}); allowing`);
      return true;
    }
  }

  /// `GET .../history?limit=N`: the last N messages, oldest first.
  history(query) {
    let limit = DEFAULT_HISTORY;
    for (const pair of query.split('&')) {
      const eq = pair.indexOf('=');
      if (eq < 0 || pair.slice(0, eq) !== 'limit') continue;
      const v = pair.slice(eq + 1);
      if (!/^\+?[0-9]+$/.test(v) || Number(v) > U32_MAX) {
        return textResponse(400, 'limit must be a non-negative integer');
      }
      limit = Math.min(Number(v), MAX_HISTORY);
    }
    let messages;
    try {
      messages = this.lastMessages(limit);
    } catch (e) {
      console.error(`loading history: ${e.message}`);
      return textResponse(500, 'could not load history');
    }
    return new Response(`[${messages.join(',')}]`, {
      headers: { 'content-type': 'application/json' },
    });
  }

  /// The last `limit` stored messages as JSON texts, oldest first (a value
  /// that is not JSON is left out).
  lastMessages(limit) {
    if (limit === 0) return [];
    const entries = this.storage.list({ prefix: MSG_PREFIX, limit, reverse: true });
    const messages = [];
    for (const [key, value] of entries) {
      if (value instanceof Uint8Array) {
        console.warn(`stored message ${key} is not JSON; skipped`);
        continue;
      }
      messages.push(JSON.stringify(value));
    }
    return messages.reverse();
  }

  /// The newest stored message's timestamp (0 when there is none, undefined
  /// when storage could not be read).
  loadLastTimestamp() {
    try {
      const [newest] = this.storage.list({ prefix: MSG_PREFIX, limit: 1, reverse: true }).keys();
      if (newest === undefined) return 0;
      const digits = newest.slice(MSG_PREFIX.length);
      return /^[0-9]+$/.test(digits) ? Number(digits) : 0;
    } catch (e) {
      console.error(`reading the newest message: ${e.message}`);
      return undefined;
    }
  }

  /// A socket's session from its attachment; null when the socket is gone.
  /// An unreadable attachment counts as a fresh, unnamed session.
  readSession(ws) {
    let value;
    try {
      value = ws.deserializeAttachment();
    } catch (e) {
      console.debug(`socket ${ws.id}: ${e.message}`);
      return null;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      if (value !== null) console.warn(`socket ${ws.id} has an unreadable session`);
      return { ip: '' };
    }
    return {
      ip: typeof value.ip === 'string' ? value.ip : '',
      name: typeof value.name === 'string' ? value.name : undefined,
    };
  }

  /// Sends a text frame to one socket (one that has gone away is ignored).
  send(ws, text) {
    try {
      ws.send(text);
    } catch (e) {
      console.debug(`sending to socket ${ws.id}: ${e.message}`);
    }
  }

  sendError(ws, message) {
    this.send(ws, JSON.stringify({ error: message }));
  }
}

export const handler = serve(ChatRoom);
