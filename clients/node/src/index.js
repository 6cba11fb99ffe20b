// gatewarden's Node client: a drop-in `GatewayManager` (the public surface and event names of the
// ClawX app's class) that runs `gatewarden run` as a sidecar, or attaches to a running one, and
// speaks its control protocol (docs/control-protocol.md). No dependencies.
//
// The event stream's schema lives in Rust (`StreamLine` in crates/gatewarden-cli); every kind it
// can send has an entry in HANDLERS below, which test/schema.test.js checks against the sample
// the Rust tests write.

import { EventEmitter } from 'node:events';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** The default gateway port of `gatewarden run` (the bundled simulator). */
export const DEFAULT_PORT = 18791;

/** The feature a server must announce in `hello` for this client to work. */
export const REQUIRED_FEATURE = 'subscribe';

/** Margin on top of an RPC's own time limit for its answer to come back over the socket. */
const RPC_MARGIN_MS = 10_000;

/** How many lines of the sidecar's stderr are kept for error messages. */
const STDERR_TAIL_LINES = 40;

/**
 * One request over the control socket: one JSON line out, one back.
 * @param {string} controlPath
 * @param {object} body
 * @param {number} timeoutMs
 * @returns {Promise<any>} the parsed answer (`{ok: ...}` or `{error: ...}`)
 */
export function controlRequest(controlPath, body, timeoutMs) {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(controlPath);
    let buffer = '';
    let settled = false;
    const finish = (error, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve(value);
    };
    const timer = setTimeout(
      () => finish(Object.assign(new Error('control request timed out'), { code: 'ETIMEDOUT' })),
      timeoutMs,
    );
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(body)}\n`));
    socket.on('data', (chunk) => {
      buffer += chunk;
      const newline = buffer.indexOf('\n');
      if (newline >= 0) {
        try {
          finish(null, JSON.parse(buffer.slice(0, newline)));
        } catch (error) {
          finish(error);
        }
      }
    });
    socket.on('error', (error) => finish(error));
    socket.on('close', () => finish(new Error('gatewarden closed the control connection without answering')));
  });
}

/**
 * The seed's status shape (`uptime`, `connectedAt`) from a stream `status` or a `snapshot`
 * report: both carry the library's names (`uptimeMs`, `connectedAtMs`, Unix ms).
 */
function seedStatus(status) {
  const out = { state: status.state, port: status.port };
  const optional = (name, value) => {
    if (value !== null && value !== undefined) out[name] = value;
  };
  optional('pid', status.pid);
  optional('uptime', status.uptimeMs);
  optional('error', status.error);
  optional('connectedAt', status.connectedAtMs);
  optional('version', status.version);
  optional('reconnectAttempts', status.reconnectAttempts);
  optional('gatewayReady', status.gatewayReady);
  return out;
}

/**
 * What the manager does with each event kind of the stream. Exported so the schema test can
 * check it covers every kind the Rust side sends.
 * @type {Record<string, (manager: GatewayManager, line: any) => void>}
 */
export const HANDLERS = Object.freeze({
  snapshot: (manager, line) => {
    manager._noteHealth(line.status.health);
    manager._setStatus(seedStatus(line.status));
    // The gateway became ready before this client subscribed: say so once, as the seed would have.
    if (line.status.gatewayReady) manager.emit('gateway:ready');
  },
  status: (manager, line) => manager._setStatus(seedStatus(line.status)),
  gatewayReady: (manager) => manager.emit('gateway:ready'),
  processExit: (manager, line) => manager.emit('exit', line.code ?? null),
  error: (manager, line) => manager._emitError(new Error(line.message)),
  notification: (manager, line) =>
    manager.emit('notification', { jsonrpc: '2.0', method: line.method, params: line.params }),
  chatMessage: (manager, line) => manager.emit('chat:message', { message: line.message }),
  channelStatus: (manager, line) => manager.emit('channel:status', line.status),
  rawMessage: (manager, line) => manager.emit('message', line.message),
  liveness: (manager, line) =>
    manager.emit('gatewarden:liveness', { liveness: line.liveness, phase: line.phase }),
  externalUnavailable: (manager) => manager.emit('gatewarden:externalUnavailable'),
  gaveUp: (manager, line) => manager._emitError(new Error(`gatewarden gave up: ${line.reason}`)),
  startupMetric: (manager, line) => manager.emit('gatewarden:metric', line),
  reconnectMetric: (manager, line) => manager.emit('gatewarden:metric', line),
});

/** The control error kinds that are transport failures (the seed counts those). */
const TRANSPORT_KINDS = new Set(['notConnected', 'timeout', 'stopped', 'sendFailed', 'externalUnavailable']);

/**
 * The gateway, through gatewarden. Events: `status`, `message`, `notification`, `exit`, `error`,
 * `channel:status`, `chat:message`, `gateway:ready` (the seed's), plus `gatewarden:liveness`,
 * `gatewarden:externalUnavailable`, `gatewarden:metric`, `gatewarden:lagged` and
 * `gatewarden:event` (every stream line as it came).
 */
export class GatewayManager extends EventEmitter {
  /**
   * @param {import('./index.d.ts').GatewayManagerOptions} [options]
   */
  constructor(options = {}) {
    super();
    this.options = options;
    this.binary = options.binary ?? process.env.GATEWARDEN_BIN ?? 'gatewarden';
    this.status = { state: 'stopped', port: options.port ?? DEFAULT_PORT };
    this.controlPath = options.control ?? null;
    this.child = null;
    this.childExit = null;
    this.stream = null;
    this.streamEnded = null;
    this.ownDir = null;
    this.stderrTail = [];
    this.lagged = 0;
    this.diagnostics = { consecutiveHeartbeatMisses: 0, consecutiveRpcFailures: 0 };
    this.restartTimer = null;
    this.reloadTimer = null;
  }

  /** The last status (the seed's shape). */
  getStatus() {
    return { ...this.status };
  }

  /** Health and RPC diagnostics: gatewarden's health report plus this client's RPC counts. */
  getDiagnostics() {
    return { ...this.diagnostics };
  }

  /** Whether the gateway is connected (state `running`). */
  isConnected() {
    return this.status.state === 'running';
  }

  /**
   * Start: attach to the instance at `control` (when `attach` is set) or spawn `gatewarden run`,
   * follow its event stream, and resolve once the gateway runs.
   */
  async start() {
    if (this.stream && !this.stream.destroyed) {
      // Already following an instance: start its gateway (after a stop).
      if (this.status.state !== 'running') {
        await this._command({ cmd: 'start' });
        await this._waitForState('running');
      }
      return;
    }
    if (this.options.attach) {
      if (!this.controlPath) throw new Error('attach needs the control socket path (options.control)');
      await this._checkHello();
    } else {
      await this._spawnSidecar();
    }
    await this._subscribe();
    if (this.status.state === 'stopped' && this.options.attach) {
      await this._command({ cmd: 'start' });
    }
    await this._waitForState('running');
  }

  /** Stop: a sidecar stops its gateway and exits; an attached instance only stops its gateway. */
  async stop() {
    clearTimeout(this.restartTimer);
    clearTimeout(this.reloadTimer);
    if (!this.controlPath || (!this.child && !this.stream)) {
      this._setStatus({ state: 'stopped', port: this.status.port });
      return;
    }
    if (this.child) {
      await this._command({ cmd: 'stop', exit: true }).catch(() => {});
      await this.childExit;
      await this.streamEnded;
      this._cleanupDir();
    } else {
      await this._command({ cmd: 'stop' });
      await this._waitForState('stopped');
    }
    if (this.status.state !== 'stopped') this._setStatus({ state: 'stopped', port: this.status.port });
  }

  /** Restart the gateway (gatewarden's restart governor may defer or suppress it). */
  async restart() {
    await this._command({ cmd: 'restart' });
  }

  /** Reload the gateway's config (in place when it can). */
  async reload() {
    await this._command({ cmd: 'reload' });
  }

  /** Restart once after `delayMs` of quiet. */
  debouncedRestart(delayMs = 2000) {
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.restart().catch((error) => this._emitError(error));
    }, delayMs);
  }

  /** Reload once after `delayMs` of quiet. */
  debouncedReload(delayMs = 1000) {
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => {
      this.reload().catch((error) => this._emitError(error));
    }, delayMs);
  }

  /** Whether the gateway answers: `{ok, error?, uptime?}`. */
  async checkHealth() {
    try {
      const answer = await controlRequest(this.controlPath ?? '', { cmd: 'status' }, 15_000);
      if (answer.error) return { ok: false, error: answer.error.message };
      const report = answer.ok;
      this._noteHealth(report.health);
      const ok = report.state === 'running' && report.health?.state !== 'unresponsive';
      return ok ? { ok, uptime: report.uptimeMs ?? undefined } : { ok, error: report.error ?? report.state };
    } catch (error) {
      return { ok: false, error: String(error?.message ?? error) };
    }
  }

  /** On app quit: end the sidecar (it stops its gateway first). Resolves true when there was one. */
  async forceTerminateOwnedProcessForQuit() {
    if (!this.child) return false;
    this.child.kill('SIGTERM');
    await this.childExit;
    this._cleanupDir();
    return true;
  }

  /** Stop following the instance without stopping it (attached use). */
  detach() {
    this.stream?.destroy();
    this.stream = null;
  }

  /**
   * Call a gateway method. Rejects with the seed's messages: `Gateway not connected`,
   * `RPC timeout: <method>`, `Gateway stopped`, `Failed to send RPC request: ...`, or the
   * gateway's own error message (with `code`).
   */
  async rpc(method, params, timeoutMs = 30_000) {
    if (!this.controlPath || !this.stream) {
      this._recordRpcFailure(method);
      throw new Error('Gateway not connected');
    }
    let answer;
    try {
      answer = await controlRequest(
        this.controlPath,
        { cmd: 'rpc', method, ...(params === undefined ? {} : { params }), timeoutMs },
        timeoutMs + RPC_MARGIN_MS,
      );
    } catch (error) {
      this._recordRpcFailure(method);
      if (error?.code === 'ETIMEDOUT') throw new Error(`RPC timeout: ${method}`);
      throw new Error('Gateway not connected');
    }
    if (answer.ok) {
      this.diagnostics.lastRpcSuccessAt = Date.now();
      this.diagnostics.consecutiveRpcFailures = 0;
      return answer.ok.result;
    }
    const { kind, message, code, details } = answer.error;
    if (TRANSPORT_KINDS.has(kind)) this._recordRpcFailure(method);
    let text;
    switch (kind) {
      case 'notConnected':
      case 'externalUnavailable':
        text = 'Gateway not connected';
        break;
      case 'timeout':
        text = `RPC timeout: ${method}`;
        break;
      case 'stopped':
        text = 'Gateway stopped';
        break;
      case 'sendFailed':
        text = `Failed to send RPC request: ${message}`;
        break;
      default:
        text = message;
    }
    throw Object.assign(new Error(text), { code, details, kind });
  }

  // -------------------------------------------------------------------------------------------
  // Internals.
  // -------------------------------------------------------------------------------------------

  _setStatus(status) {
    this.status = status;
    this.emit('status', { ...status });
  }

  _emitError(error) {
    // An EventEmitter throws on an `error` nobody listens to; a library must not crash its app.
    if (this.listenerCount('error') > 0) this.emit('error', error);
  }

  _noteHealth(health) {
    if (!health) return;
    const copy = (name) => {
      if (health[name] !== null && health[name] !== undefined) this.diagnostics[name] = health[name];
    };
    for (const name of [
      'lastAliveAt',
      'lastRpcSuccessAt',
      'lastRpcFailureAt',
      'lastRpcFailureMethod',
      'lastChannelsStatusOkAt',
      'lastChannelsStatusFailureAt',
    ]) copy(name);
    this.diagnostics.consecutiveHeartbeatMisses = health.consecutiveHeartbeatMisses ?? 0;
    this.diagnostics.health = health.state;
  }

  _recordRpcFailure(method) {
    this.diagnostics.lastRpcFailureAt = Date.now();
    this.diagnostics.lastRpcFailureMethod = method;
    this.diagnostics.consecutiveRpcFailures += 1;
  }

  async _command(body) {
    const answer = await controlRequest(this.controlPath, body, this.options.commandTimeoutMs ?? 600_000);
    if (answer.error) throw Object.assign(new Error(answer.error.message), { kind: answer.error.kind });
    const outcome = answer.ok?.outcome;
    if (outcome?.outcome === 'failed') {
      // The failure is typed (`failure.kind`, and for a failed start `failure.failure.kind`);
      // `message` beside the outcome is its text.
      throw Object.assign(new Error(answer.ok.message ?? `${body.cmd} failed`), {
        kind: outcome.failure?.kind,
        failure: outcome.failure,
      });
    }
    return answer.ok;
  }

  async _checkHello() {
    const answer = await controlRequest(this.controlPath, { cmd: 'hello' }, 5_000);
    const features = answer.ok?.features ?? [];
    if (!features.includes(REQUIRED_FEATURE)) {
      throw new Error(`gatewarden at ${this.controlPath} does not offer an event stream (protocol ${answer.ok?.protocol ?? 1})`);
    }
  }

  async _spawnSidecar() {
    if (!this.controlPath) {
      this.ownDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatewarden-node-'));
      this.controlPath = path.join(this.ownDir, 'gw.sock');
    }
    const args = ['run', '--control', this.controlPath];
    if (this.options.port !== undefined) args.push('--port', String(this.options.port));
    if (this.options.stateDir) args.push('--state-dir', this.options.stateDir);
    args.push(...(this.options.runArgs ?? []));
    // GATEWARDEN_BIN is this client's; gatewarden refuses `GATEWARDEN_*` variables it does not know.
    const { GATEWARDEN_BIN: _binary, ...inherited } = process.env;
    const child = spawn(this.binary, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...inherited, ...(this.options.env ?? {}) },
    });
    this.child = child;
    this.stderrTail = [];
    child.stderr.setEncoding('utf8');
    let partial = '';
    child.stderr.on('data', (chunk) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop() ?? '';
      this.stderrTail.push(...lines);
      if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.splice(0, this.stderrTail.length - STDERR_TAIL_LINES);
    });
    this.childExit = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.child = null;
        resolve({ code, signal });
      });
      child.on('error', (error) => {
        this.child = null;
        this.stderrTail.push(String(error.message));
        resolve({ code: null, signal: null, error });
      });
    });
    const deadline = Date.now() + (this.options.startTimeoutMs ?? 600_000);
    let exited = null;
    this.childExit.then((result) => { exited = result; });
    for (;;) {
      if (exited) throw this._sidecarError('gatewarden run exited before it answered', exited);
      try {
        await this._checkHello();
        return;
      } catch (error) {
        if (String(error.message).includes('does not offer')) throw error;
      }
      if (Date.now() > deadline) throw new Error('gatewarden run did not answer on its control socket in time');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  _sidecarError(what, exit) {
    const code = exit.code ?? exit.signal ?? 'unknown';
    const tail = this.stderrTail.filter(Boolean).slice(-10).join('\n');
    return new Error(`${what} (exit ${code})${tail ? `:\n${tail}` : ''}`);
  }

  _subscribe() {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(this.controlPath);
      this.stream = socket;
      let buffer = '';
      let first = true;
      let endSeen = false;
      this.streamEnded = new Promise((ended) => socket.on('close', ended));
      socket.setEncoding('utf8');
      socket.on('connect', () => socket.write('{"cmd":"subscribe"}\n'));
      socket.on('data', (chunk) => {
        buffer += chunk;
        let newline;
        while ((newline = buffer.indexOf('\n')) >= 0) {
          const text = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          let line;
          try {
            line = JSON.parse(text);
          } catch {
            continue;
          }
          if (line.error) {
            reject(new Error(line.error.message));
            return;
          }
          if (line.end) endSeen = true;
          this._dispatch(line);
          if (first && line.kind === 'snapshot') {
            first = false;
            resolve();
          }
        }
      });
      socket.on('error', (error) => {
        if (first) reject(error);
      });
      socket.on('close', () => {
        if (this.stream === socket) this.stream = null;
        if (first) reject(new Error('gatewarden closed the event stream'));
        else if (!endSeen) {
          // The instance vanished without saying so (killed): nothing supervises the gateway now.
          this._setStatus({ state: 'stopped', port: this.status.port, error: 'gatewarden went away' });
          this._emitError(new Error('gatewarden went away'));
        } else if (this.status.state !== 'stopped') {
          this._setStatus({ state: 'stopped', port: this.status.port });
        }
      });
    });
  }

  _dispatch(line) {
    this.emit('gatewarden:event', line);
    if (typeof line.lagged === 'number') {
      this.lagged += line.lagged;
      this.emit('gatewarden:lagged', line.lagged);
      return;
    }
    if (line.end) return;
    const handler = HANDLERS[line.kind];
    // A kind from a newer gatewarden: `gatewarden:event` above still carries it.
    if (handler) handler(this, line);
  }

  _waitForState(state) {
    if (this.status.state === state) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onStatus = (status) => {
        if (status.state === state) {
          cleanup();
          resolve();
        }
      };
      const onClose = () => {
        cleanup();
        if (this.childExit && !this.options.attach) {
          this.childExit.then((exit) => reject(this._sidecarError(`gatewarden run exited before the gateway was ${state}`, exit)));
        } else {
          reject(new Error(`the event stream ended before the gateway was ${state}`));
        }
      };
      const cleanup = () => {
        this.off('status', onStatus);
        this.stream?.off('close', onClose);
      };
      this.on('status', onStatus);
      this.stream?.on('close', onClose);
    });
  }

  _cleanupDir() {
    if (this.ownDir) {
      fs.rmSync(this.ownDir, { recursive: true, force: true });
      this.ownDir = null;
      this.controlPath = this.options.control ?? null;
    }
  }
}

export default GatewayManager;
