// layer-probe.js — a test object for durable.js (host/tests/js_chat.rs):
// each request exercises one part of the layer and answers what it saw as
// JSON, so that the test can check the layer against the host.
//
//   POST .../storage      get/put/delete/list, bytes, a host error
//   POST .../alarm?in=MS  sets the alarm; alarm() stores "alarmed"
//   GET  .../alarmed      what alarm() stored (null before)
//   POST .../call         calls another layer-probe object: an answer, a rejection
//   GET  .../env          the class's vars and the object's id
//   GET  .../async        an answer computed across awaits

import { DurableObject, RoomhostError, serve } from '../src/durable.js';

const json = (value, status = 200) =>
  new Response(JSON.stringify(value), { status, headers: { 'content-type': 'application/json' } });

const caught = (f) => {
  try {
    return { ok: f() };
  } catch (e) {
    return e instanceof RoomhostError ? { kind: e.kind, value: e.value } : { other: String(e) };
  }
};

export class LayerProbe extends DurableObject {
  async fetch(request) {
    const url = new URL(request.url);
    const op = url.pathname.split('/').pop();
    const s = this.storage;
    switch (op) {
      case 'storage': {
        s.put('a', { x: 1 });
        s.put({ b: 2, c: 'three' });
        s.put('raw', new Uint8Array([0xff, 0x00]));
        const one = s.get('a');
        const many = Object.fromEntries(s.get(['a', 'b', 'zz']));
        const listed = [...s.list({ prefix: '', reverse: true, limit: 3 }).keys()];
        const raw = s.get('raw');
        const deleted = s.delete('b');
        const deletedMany = s.delete(['a', 'c', 'nope']);
        const tooLong = caught(() => s.put('k'.repeat(3000), 1));
        const left = [...s.list().keys()];
        return json({
          one,
          many,
          listed,
          raw: raw instanceof Uint8Array ? [...raw] : raw,
          deleted,
          deletedMany,
          tooLong,
          left,
          missing: s.get('nope') ?? null,
        });
      }
      case 'alarm': {
        const ms = Number(url.searchParams.get('in') ?? '0');
        s.setAlarm(Date.now() + ms);
        return json({ pending: s.getAlarm() !== null });
      }
      case 'alarmed':
        return json(s.get('alarmed') ?? null);
      case 'call': {
        const echo = caught(() =>
          new TextDecoder().decode(this.ctx.call('layer-probe', 'other', 'shout', 'hi')),
        );
        const refused = caught(() => this.ctx.call('layer-probe', 'other', 'nope'));
        const noClass = caught(() => this.ctx.call('no-such-class', 'x', 'shout'));
        return json({ echo, refused, noClass });
      }
      case 'env':
        return json({ env: this.env, id: this.ctx.id });
      case 'async': {
        const a = await Promise.resolve(20);
        const b = await new Promise((resolve) => resolve(22));
        return json({ sum: a + b });
      }
      default:
        return new Response('no such op', { status: 404 });
    }
  }

  alarm({ retryCount }) {
    this.storage.put('alarmed', { retryCount });
  }

  call(method, payload) {
    if (method === 'shout') return new TextDecoder().decode(payload).toUpperCase();
    throw new Error(`no method ${method}`);
  }
}

export const handler = serve(LayerProbe);
