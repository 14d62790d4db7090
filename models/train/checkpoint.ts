/**
 * Checkpoints: the trainable tensors (`model.safetensors`, Hugging Face names),
 * the AdamW moments (`optimizer.safetensors`, `m.<name>` / `v.<name>`) and
 * `trainer_state.json` (step, seed, hyper-parameters). trainer_state.json is
 * written last, by rename, so a checkpoint with one is complete.
 */
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { readSafetensors, type Weights, writeSafetensors } from '../safetensors.js'
import type { OptimState } from './session.js'

export const CHECKPOINT_FILES = {
  params: 'model.safetensors',
  optimizer: 'optimizer.safetensors',
  state: 'trainer_state.json',
} as const

export interface TrainerState {
  step: number
  [key: string]: unknown
}

async function writeAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  await writeFile(`${path}.tmp`, bytes)
  await rename(`${path}.tmp`, path)
}

export async function saveCheckpoint(
  dir: string,
  s: OptimState,
  meta: Record<string, unknown> = {},
): Promise<void> {
  await mkdir(dir, { recursive: true })
  const step = String(s.step)
  await writeAtomic(join(dir, CHECKPOINT_FILES.params), writeSafetensors(s.params, { metadata: { step } }))
  const moments: Weights = new Map()
  for (const [n, t] of s.m) moments.set(`m.${n}`, t)
  for (const [n, t] of s.v) moments.set(`v.${n}`, t)
  await writeAtomic(join(dir, CHECKPOINT_FILES.optimizer), writeSafetensors(moments, { metadata: { step } }))
  const state: TrainerState = { ...meta, step: s.step }
  await writeAtomic(join(dir, CHECKPOINT_FILES.state), `${JSON.stringify(state, null, 2)}\n`)
}

/** The checkpoint in `dir`, or null when there is none. */
export async function loadCheckpoint(dir: string): Promise<{ state: OptimState; meta: TrainerState } | null> {
  const exists = await stat(join(dir, CHECKPOINT_FILES.state)).then(
    () => true,
    () => false,
  )
  if (!exists) return null
  const meta = JSON.parse(await readFile(join(dir, CHECKPOINT_FILES.state), 'utf8')) as TrainerState
  const params = readSafetensors(await readFile(join(dir, CHECKPOINT_FILES.params)))
  const opt = readSafetensors(await readFile(join(dir, CHECKPOINT_FILES.optimizer)))
  for (const f of [params, opt])
    if (Number(f.metadata.step) !== meta.step)
      throw new Error(`checkpoint: ${dir} mixes steps ${f.metadata.step} and ${meta.step}`)
  const m: Weights = new Map()
  const v: Weights = new Map()
  for (const [n, t] of opt.tensors) (n.startsWith('m.') ? m : v).set(n.slice(2), t)
  return { state: { step: meta.step, params: params.tensors, m, v }, meta }
}
