/**
 * A small Dockerfile reader for the deploy tests: instructions per stage, with
 * line continuations joined and comments dropped. Enough for the checks in
 * test/deploy (no variable expansion beyond ARG defaults in FROM).
 */
import { readFileSync } from 'node:fs'

export interface Instruction {
  op: string
  args: string
}
export interface Stage {
  from: string
  name?: string
  instructions: Instruction[]
}

export function readDockerfile(path: string): { args: Record<string, string>; stages: Stage[] } {
  const lines = readFileSync(path, 'utf8').split('\n')
  const joined: string[] = []
  let cur = ''
  for (const raw of lines) {
    const line = raw.trimEnd()
    if (!cur && (line.trim() === '' || line.trim().startsWith('#'))) continue
    if (cur && line.trim().startsWith('#')) continue
    if (line.endsWith('\\')) cur += `${line.slice(0, -1)} `
    else {
      joined.push((cur + line).trim())
      cur = ''
    }
  }
  const args: Record<string, string> = {}
  const stages: Stage[] = []
  for (const l of joined) {
    const m = /^(\S+)\s+([\s\S]*)$/.exec(l)
    if (!m) continue
    const op = m[1].toUpperCase()
    const rest = m[2].trim()
    if (op === 'ARG' && stages.length === 0) {
      const [k, v] = rest.split('=')
      args[k] = (v ?? '').replace(/^"|"$/g, '')
      continue
    }
    if (op === 'FROM') {
      const [image, as, name] = rest.split(/\s+/)
      const from = image.replace(/\$\{(\w+)\}/g, (_, k: string) => args[k] ?? '')
      stages.push({ from, ...(as?.toUpperCase() === 'AS' ? { name } : {}), instructions: [] })
      continue
    }
    stages.at(-1)?.instructions.push({ op, args: rest })
  }
  return { args, stages }
}

/** `ENV A=1 B=2` (and the old `ENV A 1`) of one stage, in order. */
export function stageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {}
  for (const i of stage.instructions.filter((x) => x.op === 'ENV')) {
    if (!i.args.includes('=')) {
      const [k, ...v] = i.args.split(/\s+/)
      env[k] = v.join(' ')
      continue
    }
    for (const m of i.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1]] = m[2].replace(/^"|"$/g, '')
  }
  return env
}

/** The exec form of CMD/ENTRYPOINT/HEALTHCHECK CMD as an array. */
export function execForm(args: string): string[] {
  const start = args.indexOf('[')
  return JSON.parse(args.slice(start)) as string[]
}
