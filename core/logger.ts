/**
 * Structured JSON logging with pino. Every component takes a Logger from here so
 * log lines share one shape: `{level, time, service, requestId?, jobId?, msg}`.
 * Secrets never reach the log: authorization headers and keys are redacted.
 */
import { type Logger, pino } from 'pino'

export type { Logger }

export interface LoggerOptions {
  level?: string
  service: string
  /** Where lines go; defaults to stdout. Tests pass a stream to read lines back. */
  destination?: NodeJS.WritableStream | { write(line: string): void }
}

export function createLogger(options: LoggerOptions): Logger {
  const opts = {
    level: options.level ?? 'info',
    base: { service: options.service },
    redact: {
      paths: [
        'apiKey',
        'secret',
        'authorization',
        'headers.authorization',
        'req.headers.authorization',
        '*.secret',
      ],
      censor: '[redacted]',
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  }
  return options.destination ? pino(opts, options.destination as pino.DestinationStream) : pino(opts)
}

/** A logger that drops everything, for tests that do not read logs. */
export const silentLogger: Logger = pino({ level: 'silent' })
