// TypeScript declarations of gatewarden's Node client. The stream types mirror the Rust serde
// type `StreamLine` (crates/gatewarden-cli/src/events_stream.rs); test/schema.test.js checks
// every kind in the sample the Rust tests write is declared in `StreamEventKind` below.
// tests/tests/node_client_types.rs type-checks an app against these declarations with `tsc
// --strict` (and a misuse, which must fail).

import { EventEmitter } from 'node:events';

/** The seed's lifecycle states (S1). */
export type GatewayLifecycleState = 'stopped' | 'starting' | 'running' | 'error' | 'reconnecting';

/** The seed's `GatewayStatus`. */
export interface GatewayStatus {
  state: GatewayLifecycleState;
  port: number;
  pid?: number;
  uptime?: number;
  error?: string;
  connectedAt?: number;
  version?: string;
  reconnectAttempts?: number;
  gatewayReady?: boolean;
}

/** The seed's diagnostics (the fields gatewarden reports), plus the health state. */
export interface GatewayDiagnosticsSnapshot {
  lastAliveAt?: number;
  lastRpcSuccessAt?: number;
  lastRpcFailureAt?: number;
  lastRpcFailureMethod?: string;
  lastChannelsStatusOkAt?: number;
  lastChannelsStatusFailureAt?: number;
  consecutiveHeartbeatMisses: number;
  consecutiveRpcFailures: number;
  health?: 'healthy' | 'degraded' | 'verifying' | 'unresponsive';
}

export interface JsonRpcNotification {
  jsonrpc: '2.0';
  method: string;
  params?: unknown;
}

export interface GatewayManagerOptions {
  /** The `gatewarden` binary (default `$GATEWARDEN_BIN`, else `gatewarden` on PATH). */
  binary?: string;
  /** Gateway port (default: gatewarden's, 18791 for the simulator). */
  port?: number;
  /** Control socket: where the sidecar listens, or the instance to attach to. */
  control?: string;
  /** Attach to the running instance at `control` instead of spawning one. */
  attach?: boolean;
  /** Sidecar state directory. */
  stateDir?: string;
  /** More `gatewarden run` arguments, e.g. `['--profile', 'openclaw']`. */
  runArgs?: string[];
  /** More environment for the sidecar (e.g. `GATEWARDEN_EVENT_QUEUE`). */
  env?: Record<string, string>;
  /** How long `start` waits for the gateway to run (default 600000). */
  startTimeoutMs?: number;
  /** How long lifecycle commands wait (default 600000). */
  commandTimeoutMs?: number;
}

/** Every `kind` of an event line (docs/control-protocol.md). */
export type StreamEventKind =
  | 'snapshot'
  | 'status'
  | 'gatewayReady'
  | 'processExit'
  | 'error'
  | 'notification'
  | 'chatMessage'
  | 'channelStatus'
  | 'rawMessage'
  | 'liveness'
  | 'externalUnavailable'
  | 'gaveUp'
  | 'startupMetric'
  | 'reconnectMetric';

/** An event line. */
export interface StreamEventLine {
  seq: number;
  ts: number;
  kind: StreamEventKind;
  [field: string]: unknown;
}

/**
 * One line of the event stream. Tell the three apart with `'kind' in line` first: an event line
 * may carry any field, so `'lagged' in line` alone does not rule it out.
 */
export type StreamLine =
  | StreamEventLine
  | { lagged: number }
  | { end: 'instanceStopped' | 'supervisorGone' };

export interface GatewayManagerEvents {
  status: (status: GatewayStatus) => void;
  message: (message: unknown) => void;
  notification: (notification: JsonRpcNotification) => void;
  exit: (code: number | null) => void;
  error: (error: Error) => void;
  'channel:status': (data: unknown) => void;
  'chat:message': (data: { message: unknown }) => void;
  'gateway:ready': () => void;
  'gatewarden:liveness': (data: { liveness: string; phase: unknown }) => void;
  'gatewarden:externalUnavailable': () => void;
  'gatewarden:metric': (line: StreamEventLine) => void;
  'gatewarden:lagged': (missed: number) => void;
  'gatewarden:event': (line: StreamLine) => void;
}

export declare const DEFAULT_PORT: number;
export declare const REQUIRED_FEATURE: string;
export declare const HANDLERS: Readonly<Record<StreamEventKind, (manager: GatewayManager, line: StreamEventLine) => void>>;

/** One control request: one JSON line out, one back. */
export declare function controlRequest(controlPath: string, body: object, timeoutMs: number): Promise<any>;

export declare class GatewayManager extends EventEmitter {
  constructor(options?: GatewayManagerOptions);
  /** The sidecar's (or attached instance's) control socket. */
  controlPath: string | null;
  /** Events this client missed because it read too slowly. */
  lagged: number;
  getStatus(): GatewayStatus;
  getDiagnostics(): GatewayDiagnosticsSnapshot;
  isConnected(): boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
  restart(): Promise<void>;
  reload(): Promise<void>;
  debouncedRestart(delayMs?: number): void;
  debouncedReload(delayMs?: number): void;
  checkHealth(): Promise<{ ok: boolean; error?: string; uptime?: number }>;
  forceTerminateOwnedProcessForQuit(): Promise<boolean>;
  detach(): void;
  rpc<T = unknown>(method: string, params?: unknown, timeoutMs?: number): Promise<T>;

  on<E extends keyof GatewayManagerEvents>(event: E, listener: GatewayManagerEvents[E]): this;
  once<E extends keyof GatewayManagerEvents>(event: E, listener: GatewayManagerEvents[E]): this;
  off<E extends keyof GatewayManagerEvents>(event: E, listener: GatewayManagerEvents[E]): this;
  emit<E extends keyof GatewayManagerEvents>(event: E, ...args: Parameters<GatewayManagerEvents[E]>): boolean;
}

export default GatewayManager;
