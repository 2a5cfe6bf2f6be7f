/** Options for a record: the emitting agent, the unit and flat tags. */
export interface EmitOptions {
  agent?: string;
  unit?: string;
  tags?: Record<string, string | number | boolean>;
}

/** How records reach cfn-emit. */
export type BridgeMode = "stdin" | "spawn";

export interface BridgeOptions {
  /** Path of the cfn-emit binary (default: $CFN_EMIT, else `cfn-emit` on PATH). */
  emitPath?: string;
  /**
   * "stdin" (default): one long-lived `cfn-emit --stdin` child per bridge, so an agent pays no
   * process start per metric. "spawn": one `cfn-emit` process per record.
   */
  mode?: BridgeMode;
  /** Extra environment for cfn-emit (e.g. CFN_METRICS_DIR); merged over process.env. */
  env?: Record<string, string | undefined>;
  /** Called with every failure (default: console.error). Failures are never thrown away. */
  onError?: (error: Error) => void;
  /** Close automatically when the process exits (default: true). */
  closeOnExit?: boolean;
}

/** Emits cfn-metrics records from an agent. */
export class MetricsBridge {
  constructor(options?: BridgeOptions);
  /** Failures seen so far (also passed to onError). */
  readonly errors: readonly Error[];
  /**
   * Queues one record. Throws a TypeError at once for a value that is not a finite number or
   * an empty metric name; later failures (cfn-emit exiting non-zero) go to onError and make
   * close() reject.
   */
  emit(metric: string, value: number, options?: EmitOptions): void;
  /** `coordination_time` in milliseconds for an agent. */
  recordCoordinationTime(agentId: string, ms: number): void;
  /** `message_delivery_rate` as a ratio (0..1) for an agent. */
  recordMessageDelivery(agentId: string, rate: number): void;
  /** `memory_usage_mb` in MB for an agent. */
  recordMemoryUsage(agentId: string, mb: number): void;
  /** Resolves once every queued record is written; rejects if any write failed. */
  close(): Promise<void>;
}

export default MetricsBridge;
