/**
 * `pgpt train`: train a model folder on text/JSONL files with the ONNX
 * train-step graph (full training, or LoRA adapters with --lora).
 *
 *   pgpt model init --out runs/base --tokenizer models/prometheus-mini
 *   pgpt train --model runs/base --data a.txt,b.jsonl --out runs/r1 --steps 300 --batch-size 8 --seq-len 256
 *   pgpt train --model models/prometheus-mini --data domain.jsonl --out runs/lora --lora --rank 8 --alpha 16
 *
 * Writes <out>/metrics.jsonl, loss.png, checkpoint/ (resume with --resume), model/ (and adapter/ for LoRA).
 */
import { defineCommand } from 'citty'
import { runTrainJob } from '../models/train/job.js'
import { LORA_MODULES, type LoraModule } from '../models/train/lora.js'

const num = (v: string | undefined, flag: string): number | undefined => {
  if (v === undefined || v === '') return undefined
  const n = Number(v)
  if (!Number.isFinite(n)) throw new Error(`--${flag}: '${v}' is not a number`)
  return n
}

export default defineCommand({
  meta: {
    name: 'train',
    description: 'Train or LoRA-fine-tune a model folder on text/JSONL data (onnxruntime)',
  },
  args: {
    model: {
      type: 'string',
      required: true,
      description: 'Model folder to start from (config, weights, tokenizer)',
    },
    data: { type: 'string', required: true, description: 'Comma-separated .txt/.md/.jsonl files' },
    out: {
      type: 'string',
      required: true,
      description: 'Output folder (metrics, loss.png, checkpoint/, model/)',
    },
    steps: { type: 'string', default: '200', description: 'Optimizer steps' },
    'batch-size': { type: 'string', default: '8', description: 'Sequences per step' },
    'seq-len': { type: 'string', default: '256', description: 'Tokens per sequence' },
    lr: { type: 'string', default: '1e-3', description: 'Peak learning rate' },
    'min-lr': { type: 'string', description: 'Final learning rate (default lr/10)' },
    warmup: { type: 'string', description: 'Warmup steps (default 5% of steps)' },
    'weight-decay': { type: 'string', description: 'AdamW weight decay (default 0.1; LoRA 0)' },
    clip: { type: 'string', default: '1', description: 'Global gradient-norm clip (0 = off)' },
    seed: { type: 'string', default: '0', description: 'Seed for data order, split and init' },
    'val-fraction': {
      type: 'string',
      default: '0.1',
      description: 'Share of windows held out for validation',
    },
    'eval-every': { type: 'string', default: '100', description: 'Evaluate every N steps (and at the end)' },
    'eval-batches': { type: 'string', description: 'Validation batches per evaluation (default all)' },
    'checkpoint-every': { type: 'string', default: '100', description: 'Checkpoint every N steps' },
    resume: { type: 'boolean', default: false, description: 'Continue from <out>/checkpoint' },
    lora: { type: 'boolean', default: false, description: 'Train LoRA adapters, base frozen' },
    rank: { type: 'string', default: '8', description: 'LoRA rank' },
    alpha: { type: 'string', default: '16', description: 'LoRA alpha (scale alpha/rank)' },
    targets: {
      type: 'string',
      default: 'q_proj,v_proj',
      description: `LoRA target modules (${LORA_MODULES.join(',')})`,
    },
    threads: { type: 'string', description: 'onnxruntime intra-op threads' },
    provider: { type: 'string', default: 'cpu', description: 'Execution providers, in order: cuda,cpu' },
  },
  async run({ args }) {
    const controller = new AbortController()
    process.once('SIGINT', () => {
      console.error('\nstopping after this step (checkpoint will be saved)…')
      controller.abort()
    })
    const r = await runTrainJob({
      modelDir: args.model,
      data: args.data.split(',').filter(Boolean),
      outDir: args.out,
      hyperparameters: {
        batchSize: num(args['batch-size'], 'batch-size')!,
        seqLen: num(args['seq-len'], 'seq-len')!,
        steps: num(args.steps, 'steps')!,
        lr: num(args.lr, 'lr')!,
        minLr: num(args['min-lr'], 'min-lr'),
        warmupSteps: num(args.warmup, 'warmup'),
        weightDecay: num(args['weight-decay'], 'weight-decay'),
        clipNorm: num(args.clip, 'clip'),
        seed: num(args.seed, 'seed')!,
        evalEvery: num(args['eval-every'], 'eval-every'),
        evalBatches: num(args['eval-batches'], 'eval-batches'),
      },
      valFraction: num(args['val-fraction'], 'val-fraction'),
      checkpointEvery: num(args['checkpoint-every'], 'checkpoint-every'),
      resume: args.resume,
      lora: args.lora
        ? {
            rank: num(args.rank, 'rank')!,
            alpha: num(args.alpha, 'alpha')!,
            targetModules: args.targets.split(',').filter(Boolean) as LoraModule[],
          }
        : undefined,
      session: { threads: num(args.threads, 'threads'), executionProviders: args.provider.split(',') },
      signal: controller.signal,
    })
    const ppl = r.valLoss === null ? 'n/a' : Math.exp(r.valLoss).toFixed(2)
    console.log(
      `trained ${r.steps} steps: val loss ${r.valLoss?.toFixed(4) ?? 'n/a'} (ppl ${ppl})` +
        (r.baseValLoss !== null ? `, before ${r.baseValLoss.toFixed(4)}` : '') +
        `, unigram entropy ${r.unigramEntropy.toFixed(4)}\nmodel: ${r.modelDir}${r.adapterDir ? `\nadapter: ${r.adapterDir}` : ''}`,
    )
  },
})
