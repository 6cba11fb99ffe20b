// GatewayManager end to end against `gatewarden run` with the bundled simulator: real processes,
// real sockets. GATEWARDEN_BIN names the binary under test (the Rust test that runs these sets
// it; without it, `gatewarden` on PATH).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';

import { GatewayManager } from '../src/index.js';

const DEADLINE_MS = 60_000;

/** A free TCP port (bind :0, read it, release it). */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The next `event` whose arguments satisfy `accept`. */
function next(emitter, event, accept = () => true, what = event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out waiting for ${what}`));
    }, DEADLINE_MS);
    const listener = (...args) => {
      if (!accept(...args)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(args);
    };
    emitter.on(event, listener);
  });
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function eventually(what, condition) {
  const started = Date.now();
  while (Date.now() - started < DEADLINE_MS) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('start, status through running, rpc, a killed gateway comes back, chat, stop leaves nothing', async (t) => {
  const manager = new GatewayManager({ port: await freePort() });
  t.after(() => manager.forceTerminateOwnedProcessForQuit());
  const states = [];
  manager.on('status', (status) => states.push(status.state));
  const ready = next(manager, 'gateway:ready');
  await manager.start();
  assert.equal(manager.isConnected(), true);
  assert.equal(states.at(-1), 'running');
  assert.ok(states.includes('running'), JSON.stringify(states));
  await ready;
  const status = manager.getStatus();
  assert.equal(typeof status.pid, 'number');
  assert.equal(status.state, 'running');

  assert.deepEqual(await manager.rpc('echo', { a: 1 }), { a: 1 });
  await assert.rejects(manager.rpc('no.such.method'), (error) => {
    assert.equal(error.kind, 'gateway');
    return true;
  });
  assert.equal(typeof manager.getDiagnostics().lastRpcSuccessAt, 'number');

  // A killed gateway: `exit`, then `running` again with another process.
  const first = status.pid;
  const exited = next(manager, 'exit');
  const back = next(manager, 'status', (s) => s.state === 'running' && s.pid !== first, 'running again');
  process.kill(first, 'SIGKILL');
  const [code] = await exited;
  assert.ok(code === null || typeof code === 'number');
  const [again] = await back;
  assert.notEqual(again.pid, first);

  // A `chat` event from the gateway arrives as `chat:message`.
  const chat = next(manager, 'chat:message');
  await manager.rpc('sim.fault', { kind: 'event', event: 'chat', payload: { text: 'hi' } });
  const [data] = await chat;
  assert.deepEqual(data, { message: { text: 'hi' } });

  // Stop: the sidecar, its gateway and its socket are gone.
  const gateway = manager.getStatus().pid;
  const control = manager.controlPath;
  await manager.stop();
  assert.equal(manager.getStatus().state, 'stopped');
  assert.equal(manager.isConnected(), false);
  await eventually('the gateway to be gone', () => !alive(gateway));
  assert.equal(fs.existsSync(control), false, 'the control socket is left');
  await assert.rejects(manager.rpc('echo', {}), /Gateway not connected/);
});

test('rpc before start and after a timeout uses the seed\'s messages', async (t) => {
  const manager = new GatewayManager({ port: await freePort() });
  t.after(() => manager.forceTerminateOwnedProcessForQuit());
  await assert.rejects(manager.rpc('echo', {}), { message: 'Gateway not connected' });
  await manager.start();
  // The simulator answers `sim.fault` hang modes by not answering; a short limit then times out.
  await manager.rpc('sim.fault', { kind: 'busy', ms: 1500 }).catch(() => {});
  await assert.rejects(manager.rpc('echo', {}, 200), { message: 'RPC timeout: echo' });
  await manager.stop();
});

test('two clients subscribed while one is stalled: the other keeps up and rpc answers', async (t) => {
  const manager = new GatewayManager({
    port: await freePort(),
    env: { GATEWARDEN_EVENT_QUEUE: '256' },
  });
  t.after(() => manager.forceTerminateOwnedProcessForQuit());
  await manager.start();
  const stalled = new GatewayManager({ attach: true, control: manager.controlPath });
  await stalled.start();
  stalled.stream.pause();

  const COUNT = 20_000;
  const last = next(
    manager,
    'notification',
    (notification) => notification.method === 'sim.flood' && notification.params.n === COUNT - 1,
    'the last flood event',
  );
  await manager.rpc('sim.fault', { kind: 'event-flood', count: COUNT, bytes: 512 });
  await last;
  // Nobody waits for the stalled client.
  assert.deepEqual(await manager.rpc('echo', { ok: 1 }), { ok: 1 });

  const lagged = next(stalled, 'gatewarden:lagged');
  stalled.stream.resume();
  const [missed] = await lagged;
  assert.ok(missed > 0);
  stalled.detach();
  await manager.stop();
});
