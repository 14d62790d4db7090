/** Node side of configuration: process.env plus the optional PGPT_CONFIG_FILE (JSON). */
import { readFileSync } from 'node:fs'
import { type Config, ConfigError, type ConfigSource, parseConfig } from './config.js'

export function loadConfig(env: ConfigSource = process.env): Config {
  const path = env.PGPT_CONFIG_FILE
  let file: ConfigSource = {}
  if (path) {
    let text: string
    try {
      text = readFileSync(path, 'utf8')
    } catch (err) {
      throw new ConfigError([
        { variable: 'PGPT_CONFIG_FILE', message: `cannot read '${path}': ${(err as Error).message}` },
      ])
    }
    try {
      const parsed = JSON.parse(text) as unknown
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object')
      file = Object.fromEntries(
        Object.entries(parsed).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]),
      )
      for (const [k, v] of Object.entries(parsed)) if (Array.isArray(v)) file[k] = v.join(',')
    } catch (err) {
      throw new ConfigError([
        { variable: 'PGPT_CONFIG_FILE', message: `'${path}' is not valid JSON: ${(err as Error).message}` },
      ])
    }
  }
  return parseConfig(env, file)
}
