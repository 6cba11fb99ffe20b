// The TypeScript declarations and the runtime's handlers against the sample the Rust tests write
// from the one serde type of the event stream (crates/gatewarden-cli/src/events_stream.rs): a
// kind added in Rust and not here fails this test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';

import { HANDLERS } from '../src/index.js';

const sample = JSON.parse(fs.readFileSync(new URL('./fixtures/events.sample.json', import.meta.url), 'utf8'));
const declarations = fs.readFileSync(new URL('../src/index.d.ts', import.meta.url), 'utf8');

/** The string literals of `export type StreamEventKind = ...;`. */
function declaredKinds() {
  const match = declarations.match(/export type StreamEventKind =([^;]*);/);
  assert.ok(match, 'index.d.ts declares StreamEventKind');
  return new Set([...match[1].matchAll(/'([^']+)'/g)].map((literal) => literal[1]));
}

test('every event kind of the sample is declared and handled, and nothing else is', () => {
  const sampled = new Set(sample.filter((line) => 'kind' in line).map((line) => line.kind));
  assert.ok(sampled.size >= 14, `the sample has ${sampled.size} kinds`);
  assert.deepEqual([...declaredKinds()].sort(), [...sampled].sort());
  assert.deepEqual(Object.keys(HANDLERS).sort(), [...sampled].sort());
});

test('every event line has seq and ts, and the other shapes are lagged and end', () => {
  for (const line of sample) {
    if ('kind' in line) {
      assert.equal(typeof line.seq, 'number');
      assert.equal(typeof line.ts, 'number');
    } else if ('lagged' in line) {
      assert.equal(typeof line.lagged, 'number');
      assert.match(declarations, /\{ lagged: number \}/);
    } else {
      assert.ok(['instanceStopped', 'supervisorGone'].includes(line.end), JSON.stringify(line));
      assert.match(declarations, new RegExp(`'${line.end}'`));
    }
  }
});

test('the status fields the client maps are in the sample', () => {
  const status = sample.find((line) => line.kind === 'status').status;
  for (const field of ['state', 'port', 'pid', 'uptimeMs', 'error', 'connectedAtMs', 'version', 'reconnectAttempts', 'gatewayReady']) {
    assert.ok(field in status, `status.${field}`);
  }
  const snapshot = sample.find((line) => line.kind === 'snapshot').status;
  for (const field of ['state', 'port', 'pid', 'uptimeMs', 'connectedAtMs', 'health']) {
    assert.ok(field in snapshot, `snapshot.status.${field}`);
  }
});
