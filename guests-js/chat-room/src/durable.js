// durable.js — a thin layer over the `roomhost:object` world that lets a room
// read like a Cloudflare Durable Object class.
//
//     import { DurableObject, serve } from './durable.js';
//
//     class Counter extends DurableObject {
//       async fetch(request) {
//         const n = ((await this.storage.get('n')) ?? 0) + 1;
//         await this.storage.put('n', n);
//         return new Response(String(n));
//       }
//     }
//
//     export const handler = serve(Counter);
//
// What the host calls, and what the class gets:
//
// * `init` (a fresh instance: first event, after a trap, after hibernation)
//   constructs the class with `(ctx, env)`. Guest memory is a cache: the
//   class rebuilds what it needs from storage and its sockets.
// * `on-request` → `fetch(request)`, with a web `Request` (the URL names
//   the request's `host` header, the client address in the `cf-connecting-ip`
//   header; `ctx.isWebSocketUpgrade(request)` says whether the host would
//   accept an upgrade, as the web `Request` keeps no `upgrade` header). It
//   returns a `Response`, or the `WebSocket` that
//   `ctx.acceptWebSocket(request, tags)` gave it to accept the upgrade.
// * `on-socket-message` → `webSocketMessage(ws, message)` (a string, or an
//   `ArrayBuffer` for a binary frame); `on-socket-close` →
//   `webSocketClose(ws, code, reason, wasClean)`; `on-alarm` →
//   `alarm({ retryCount, isRetry })`; `on-call` → `call(method, payload)`
//   (payload a `Uint8Array`; return a string or bytes; throw to reject).
// * Handlers may be `async`: the engine runs the event loop until the
//   returned promise settles, within the event. An exception that escapes a
//   handler is logged and traps the event, so its writes and frames are
//   dropped (the room's sockets stay open).
//
// `ctx` (also `this.ctx`; `this.storage` is `ctx.storage`):
//
// * `storage.get(key | keys)`, `put(key, value | entries)`, `delete(key | keys)`,
//   `list({ prefix, start, startAfter, end, limit, reverse })` (a `Map`),
//   `deleteAll()`, `getAlarm()`, `setAlarm(time)`, `deleteAlarm()`. Values
//   are stored as JSON text, except a `Uint8Array`/`ArrayBuffer`, stored as
//   its bytes; a stored value that is not JSON reads back as a `Uint8Array`.
//   Every event is one transaction (the host commits when it returns).
// * `isWebSocketUpgrade(request)`, `acceptWebSocket(request, tags)`,
//   `getWebSockets(tag)`, `getTags(ws)`,
//   `setTags(ws, tags)`, `broadcast(message, { tag, except })` (encoded once
//   by the host), `setWebSocketAutoResponse(pair)`,
//   `getWebSocketAutoResponse()`, `getWebSocketAutoResponseTimestamp(ws)`.
// * `call(className, name, method, payload)` → `Uint8Array` (objects.call;
//   throws a `RoomhostError` whose `kind` is the call-error case),
//   `uniqueId()`, `id` (`{ class, name }`), `version`, `upgradedFrom()`.
// * `ws.send(message)`, `ws.close(code, reason)`,
//   `ws.serializeAttachment(value)` (JSON, ≤ 2 KiB, kept by the host),
//   `ws.deserializeAttachment()`.
//
// `env` holds the class's configured vars (`[classes.NAME] vars = {...}`),
// read once per instance through `wasi:cli/environment`.
//
// `console.log/info/warn/error/debug` go to the host's log through the
// world's `log` interface, tagged with the object's id.
//
// Host errors (a socket that has gone, a key too large, a quota) are thrown
// as `RoomhostError` with `kind` (the WIT case, e.g. 'not-found') and `value`.

import * as hostStorage from 'roomhost:object/storage@0.1.0';
import * as hostSockets from 'roomhost:object/sockets@0.1.0';
import * as hostObjects from 'roomhost:object/objects@0.1.0';
import * as hostAlarms from 'roomhost:object/alarms@0.1.0';
import * as hostVersions from 'roomhost:object/versions@0.1.0';
import { log } from 'roomhost:object/log@0.1.0';
import { getEnvironment } from 'wasi:cli/environment@0.2.12';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/// A copy of `b` in this module's realm. The generated bindings run in a
/// realm of their own: their byte arrays fail `instanceof Uint8Array` here.
const ownBytes = (b) => new Uint8Array(b);

/// A host call that failed: `kind` is the WIT error case, `value` its payload.
export class RoomhostError extends Error {
  constructor(kind, value, what) {
    super(value === undefined ? `${what}: ${kind}` : `${what}: ${kind} (${value})`);
    this.name = 'RoomhostError';
    this.kind = kind;
    this.value = value;
  }
}

/// Runs a host call, turning its WIT error into a `RoomhostError`.
function host(what, f) {
  try {
    return f();
  } catch (e) {
    const payload = e && e.payload;
    if (payload === undefined) throw e;
    if (typeof payload === 'string') throw new RoomhostError(payload, undefined, what);
    throw new RoomhostError(payload.tag, payload.val, what);
  }
}

// ---- logging -------------------------------------------------------------

function format(args) {
  return args
    .map((a) => {
      if (typeof a === 'string') return a;
      if (a instanceof Error || (a && typeof a.stack === 'string')) {
        return a.stack ? `${a}\n${a.stack}` : String(a);
      }
      try {
        return JSON.stringify(a, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
      } catch {
        return String(a);
      }
    })
    .join(' ');
}

const logger = (level) => (...args) => log(level, format(args));
// StarlingMonkey's console writes to stdout, which the host discards: send it
// to the host's log instead. (Only functions are installed here, at build
// time; `log` is called at run time.)
globalThis.console = {
  ...globalThis.console,
  log: logger('info'),
  info: logger('info'),
  warn: logger('warn'),
  error: logger('error'),
  debug: logger('debug'),
  trace: logger('trace'),
};

// ---- storage -------------------------------------------------------------

function encodeValue(value) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`storage: cannot store ${typeof value}`);
  return encoder.encode(text);
}

function decodeValue(bytes) {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch {
    return ownBytes(bytes);
  }
}

/// The object's storage; each event is one transaction.
class Storage {
  /// The value of `key` (undefined if absent), or a `Map` of those of `keys`
  /// that exist.
  get(keys) {
    if (Array.isArray(keys)) {
      const found = host('storage.get', () => hostStorage.getMany(keys));
      return new Map(found.map(([k, v]) => [k, decodeValue(v)]));
    }
    const value = host('storage.get', () => hostStorage.get(keys));
    return value === undefined ? undefined : decodeValue(value);
  }

  /// Writes `value` under `key`, or every entry of the object `key`.
  put(key, value) {
    if (typeof key === 'object' && key !== null) {
      const entries = Object.entries(key).map(([k, v]) => [k, encodeValue(v)]);
      host('storage.put', () => hostStorage.putMany(entries));
      return;
    }
    const bytes = encodeValue(value);
    host('storage.put', () => hostStorage.put(key, bytes));
  }

  /// Deletes `key` (true if it existed) or `keys` (how many existed).
  delete(keys) {
    if (Array.isArray(keys)) return host('storage.delete', () => hostStorage.deleteMany(keys));
    return host('storage.delete', () => hostStorage.delete(keys));
  }

  /// Entries in key order (descending with `reverse`) as a `Map`.
  list(options = {}) {
    const entries = host('storage.list', () =>
      hostStorage.list({
        prefix: options.prefix,
        start: options.start,
        startAfter: options.startAfter,
        end: options.end,
        limit: options.limit,
        reverse: Boolean(options.reverse),
      }),
    );
    return new Map(entries.map(([k, v]) => [k, decodeValue(v)]));
  }

  /// Deletes every key of the object.
  deleteAll() {
    host('storage.deleteAll', () => hostStorage.deleteAll());
  }

  /// The pending alarm as milliseconds since the epoch, or null.
  getAlarm() {
    const at = hostAlarms.get();
    return at === undefined ? null : Number(at);
  }

  /// Sets the alarm (a `Date` or milliseconds since the epoch).
  setAlarm(time) {
    const ms = time instanceof Date ? time.getTime() : Number(time);
    hostAlarms.set(BigInt(Math.max(0, Math.floor(ms))));
  }

  deleteAlarm() {
    hostAlarms.delete();
  }
}

// ---- sockets -------------------------------------------------------------

function frameOf(message) {
  if (typeof message === 'string') return { tag: 'text', val: message };
  if (message instanceof Uint8Array) return { tag: 'binary', val: message };
  if (message instanceof ArrayBuffer) return { tag: 'binary', val: new Uint8Array(message) };
  if (ArrayBuffer.isView(message)) {
    return {
      tag: 'binary',
      val: new Uint8Array(message.buffer, message.byteOffset, message.byteLength),
    };
  }
  throw new TypeError('a WebSocket message is a string or bytes');
}

/// One of the object's host-owned WebSockets.
export class WebSocket {
  constructor(id) {
    /// The host's socket id (a BigInt).
    this.id = id;
    /// Set while the upgrade of this socket is being accepted.
    this.pending = null;
  }

  /// Queues a frame (released once the event's writes are durable).
  send(message) {
    const frame = frameOf(message);
    host('ws.send', () => hostSockets.send(this.id, frame));
  }

  /// Closes the socket with `code` and `reason`.
  close(code = 1000, reason = '') {
    host('ws.close', () => hostSockets.close(this.id, code, reason));
  }

  /// Keeps `value` (as JSON, at most 2 KiB) with the socket, on the host.
  serializeAttachment(value) {
    const bytes = value === undefined || value === null ? undefined : encodeValue(value);
    if (this.pending) {
      this.pending.attachment = bytes;
      return;
    }
    host('ws.serializeAttachment', () => hostSockets.setAttachment(this.id, bytes));
  }

  /// What `serializeAttachment` kept, or null.
  deserializeAttachment() {
    if (this.pending) {
      return this.pending.attachment === undefined ? null : decodeValue(this.pending.attachment);
    }
    const bytes = host('ws.deserializeAttachment', () => hostSockets.attachment(this.id));
    return bytes === undefined ? null : decodeValue(bytes);
  }
}

/// A `(request, response)` pair of texts the host answers by itself.
export class WebSocketRequestResponsePair {
  constructor(request, response) {
    this.request = request;
    this.response = response;
  }
}

// ---- the context ---------------------------------------------------------

/// What a room gets as `this.ctx`: its storage, sockets and identity.
class State {
  constructor() {
    this.storage = new Storage();
    /// id → WebSocket, so a socket is the same object across events.
    this.sockets = new Map();
    /// The upgrade request of the running `fetch`, and its socket.
    this.upgrade = null;
    this.selfId = null;
  }

  /// The WebSocket object for a host socket id.
  socket(id) {
    let ws = this.sockets.get(id);
    if (!ws) {
      ws = new WebSocket(id);
      this.sockets.set(id, ws);
    }
    return ws;
  }

  /// Whether `request` (of the running `fetch`) asks for a WebSocket that
  /// the host would accept. (The web `Request` drops the `upgrade` header.)
  isWebSocketUpgrade(request) {
    const upgrade = this.upgrade;
    return Boolean(upgrade && upgrade.request === request && upgrade.id !== undefined);
  }

  /// Accepts the WebSocket upgrade `request` asks for, with `tags`; `fetch`
  /// returns the socket to complete it. Frames sent to it now are delivered
  /// once the upgrade completes.
  acceptWebSocket(request, tags = []) {
    if (!this.isWebSocketUpgrade(request)) {
      throw new TypeError('acceptWebSocket: not a WebSocket upgrade request of this fetch');
    }
    const upgrade = this.upgrade;
    const ws = this.socket(upgrade.id);
    ws.pending = { tags: [...tags], attachment: undefined };
    upgrade.ws = ws;
    return ws;
  }

  /// The open sockets (with `tag`: those carrying it), in accept order.
  getWebSockets(tag) {
    // list<u64> arrives as a BigUint64Array, whose map would make BigInts.
    return Array.from(hostSockets.list(tag), (id) => this.socket(id));
  }

  getTags(ws) {
    if (ws.pending) return [...ws.pending.tags];
    return [...host('getTags', () => hostSockets.tags(ws.id))];
  }

  setTags(ws, tags) {
    if (ws.pending) {
      ws.pending.tags = [...tags];
      return;
    }
    host('setTags', () => hostSockets.setTags(ws.id, tags));
  }

  /// Sends one frame to every socket (with `tag`: those carrying it) but
  /// those in `except`; the host encodes it once. Returns how many.
  broadcast(message, { tag, except = [] } = {}) {
    return hostSockets.broadcast(
      frameOf(message),
      tag,
      except.map((ws) => ws.id),
    );
  }

  setWebSocketAutoResponse(pair) {
    const texts = pair ? [pair.request, pair.response] : undefined;
    host('setWebSocketAutoResponse', () => hostSockets.setAutoResponse(texts));
  }

  getWebSocketAutoResponse() {
    const pair = hostSockets.getAutoResponse();
    return pair ? new WebSocketRequestResponsePair(pair[0], pair[1]) : null;
  }

  /// When the host last answered the auto-response on `ws` (a Date), or null.
  getWebSocketAutoResponseTimestamp(ws) {
    const at = host('getWebSocketAutoResponseTimestamp', () =>
      hostSockets.autoResponseTimestamp(ws.id),
    );
    return at === undefined ? null : new Date(Number(at));
  }

  /// Calls `method` of object `(className, name)`; answers its bytes.
  call(className, name, method, payload = new Uint8Array()) {
    const bytes = typeof payload === 'string' ? encoder.encode(payload) : payload;
    return ownBytes(host('call', () => hostObjects.call(className, name, method, bytes)));
  }

  uniqueId() {
    return hostObjects.uniqueId();
  }

  /// This object's `{ class, name }`.
  get id() {
    this.selfId ??= hostObjects.selfId();
    return this.selfId;
  }

  /// This instance's version id.
  get version() {
    return hostVersions.current();
  }

  /// The version that wrote the stored data when that is not `version`.
  upgradedFrom() {
    return hostVersions.upgradedFrom() ?? null;
  }
}

/// The class's vars, read once per instance.
function readEnv() {
  const env = {};
  for (const [k, v] of getEnvironment()) env[k] = v;
  return env;
}

/// A base class for rooms: keeps `ctx` and `env`.
export class DurableObject {
  constructor(ctx, env) {
    this.ctx = ctx;
    this.env = env;
    this.storage = ctx.storage;
  }
}

// ---- the handler ---------------------------------------------------------

/// A web `Request` for the host's request record.
function toRequest(req) {
  const headers = new Headers();
  for (const [name, value] of req.headers) {
    try {
      headers.append(name, value);
    } catch {
      // A header the web API refuses is left out.
    }
  }
  headers.set('cf-connecting-ip', req.clientIp);
  const authority = headers.get('host') || 'localhost';
  const url = `http://${authority}${req.path}${req.query !== undefined ? `?${req.query}` : ''}`;
  const init = { method: req.method, headers };
  if (req.body.length > 0 && req.method !== 'GET' && req.method !== 'HEAD') init.body = req.body;
  return new Request(url, init);
}

function textResponse(status, text) {
  return {
    tag: 'response',
    val: {
      status,
      headers: [['content-type', 'text/plain; charset=utf-8']],
      body: encoder.encode(text),
    },
  };
}

/// Logs an exception that escaped a handler and rethrows it (a trap).
function rethrow(what, e) {
  log('error', `${what} threw: ${format([e])}`);
  throw e;
}

/// The `handler` export for the class `Room`: `export const handler = serve(Room);`.
export function serve(Room) {
  const ctx = new State();
  let room = null;
  const theRoom = () => {
    if (!room) room = new Room(ctx, readEnv());
    return room;
  };
  return {
    init() {
      try {
        room = new Room(ctx, readEnv());
      } catch (e) {
        rethrow('the constructor', e);
      }
    },

    async onRequest(req) {
      const request = toRequest(req);
      ctx.upgrade = { request, id: req.websocket, ws: null };
      try {
        const result = await theRoom().fetch(request);
        const ws = ctx.upgrade.ws;
        if (ws && result === ws) {
          const { tags, attachment } = ws.pending;
          ws.pending = null;
          return { tag: 'accept-websocket', val: { tags, attachment } };
        }
        if (ws) ws.pending = null;
        if (!(result instanceof Response)) {
          log('error', 'fetch returned neither a Response nor the accepted WebSocket');
          return textResponse(500, 'internal error');
        }
        const body = new Uint8Array(await result.arrayBuffer());
        return {
          tag: 'response',
          val: { status: result.status, headers: [...result.headers], body },
        };
      } catch (e) {
        rethrow('fetch', e);
      } finally {
        ctx.upgrade = null;
      }
    },

    async onSocketMessage(id, frame) {
      const message = frame.tag === 'text' ? frame.val : ownBytes(frame.val).buffer;
      try {
        await theRoom().webSocketMessage?.(ctx.socket(id), message);
      } catch (e) {
        rethrow('webSocketMessage', e);
      }
    },

    async onSocketClose(id, code, reason) {
      const ws = ctx.socket(id);
      try {
        await theRoom().webSocketClose?.(ws, code, reason, code !== 1006);
      } catch (e) {
        rethrow('webSocketClose', e);
      } finally {
        ctx.sockets.delete(id);
      }
    },

    async onAlarm(retryCount) {
      try {
        await theRoom().alarm?.({ retryCount, isRetry: retryCount > 0 });
      } catch (e) {
        rethrow('alarm', e);
      }
    },

    async onCall(method, payload) {
      const room = theRoom();
      if (typeof room.call !== 'function') throw `no such method: ${method}`;
      let answer;
      try {
        answer = await room.call(method, ownBytes(payload));
      } catch (e) {
        // A rejection, not a trap: the caller gets the message.
        throw e && typeof e.message === 'string' ? e.message : String(e);
      }
      if (answer === undefined || answer === null) return new Uint8Array();
      return typeof answer === 'string' ? encoder.encode(answer) : new Uint8Array(answer);
    },
  };
}
