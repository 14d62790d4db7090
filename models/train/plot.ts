/**
 * Loss-curve image (PNG via pngjs): training loss per step (blue, a
 * light raw line and a dark moving average) and validation loss (orange
 * dots), on a grid with the loss range and step range written as labels.
 * Labels use a 3×5 pixel font for digits (no font dependency needed for numbers).
 */
import { writeFile } from 'node:fs/promises'
import { PNG } from 'pngjs'

export interface CurvePoint {
  step: number
  loss: number
}

type RGB = [number, number, number]

const DIGITS: Record<string, string[]> = {
  '0': ['111', '101', '101', '101', '111'],
  '1': ['010', '110', '010', '010', '111'],
  '2': ['111', '001', '111', '100', '111'],
  '3': ['111', '001', '111', '001', '111'],
  '4': ['101', '101', '111', '001', '001'],
  '5': ['111', '100', '111', '001', '111'],
  '6': ['111', '100', '111', '101', '111'],
  '7': ['111', '001', '001', '001', '001'],
  '8': ['111', '101', '111', '101', '111'],
  '9': ['111', '101', '111', '001', '111'],
  '.': ['000', '000', '000', '000', '010'],
}

export function lossCurvePng(train: CurvePoint[], val: CurvePoint[], width = 800, height = 480): Uint8Array {
  const png = new PNG({ width, height })
  png.data.fill(255)
  const set = (x: number, y: number, [r, g, b]: RGB) => {
    x = Math.round(x)
    y = Math.round(y)
    if (x < 0 || y < 0 || x >= width || y >= height) return
    const i = (y * width + x) * 4
    png.data[i] = r
    png.data[i + 1] = g
    png.data[i + 2] = b
    png.data[i + 3] = 255
  }
  const text = (s: string, x: number, y: number, scale = 2) => {
    for (const ch of s) {
      const glyph = DIGITS[ch]
      if (glyph)
        glyph.forEach((row, gy) => {
          for (let gx = 0; gx < 3; gx++)
            if (row[gx] === '1')
              for (let a = 0; a < scale; a++)
                for (let b = 0; b < scale; b++) set(x + gx * scale + a, y + gy * scale + b, [0, 0, 0])
        })
      x += 4 * scale
    }
  }
  const all = [...train, ...val].filter((p) => Number.isFinite(p.loss))
  if (all.length === 0) return PNG.sync.write(png)
  const left = 60
  const right = width - 20
  const top = 20
  const bottom = height - 40
  const maxStep = Math.max(...all.map((p) => p.step), 1)
  const lo = Math.min(...all.map((p) => p.loss))
  const hi = Math.max(...all.map((p) => p.loss))
  const span = hi - lo || 1
  const px = (s: number) => left + ((right - left) * s) / maxStep
  const py = (l: number) => bottom - ((bottom - top) * (l - lo)) / span
  for (let i = 0; i <= 4; i++) {
    const y = top + ((bottom - top) * i) / 4
    for (let x = left; x <= right; x += 2) set(x, y, [210, 210, 210])
    text((hi - (span * i) / 4).toFixed(2), 4, y - 5)
  }
  for (let y = top; y <= bottom; y++) set(left, y, [0, 0, 0])
  for (let x = left; x <= right; x++) set(x, bottom, [0, 0, 0])
  text('0', left - 3, bottom + 10)
  text(String(maxStep), right - 8 * String(maxStep).length, bottom + 10)
  const line = (pts: CurvePoint[], color: RGB) => {
    for (let i = 1; i < pts.length; i++) {
      const [a, b] = [pts[i - 1], pts[i]]
      const n = Math.max(1, Math.ceil(Math.hypot(px(b.step) - px(a.step), py(b.loss) - py(a.loss))))
      for (let k = 0; k <= n; k++)
        set(px(a.step + ((b.step - a.step) * k) / n), py(a.loss + ((b.loss - a.loss) * k) / n), color)
    }
  }
  line(train, [170, 200, 235])
  const window = Math.max(1, Math.round(train.length / 50))
  line(
    train.map((p, i) => {
      const w = train.slice(Math.max(0, i - window + 1), i + 1)
      return { step: p.step, loss: w.reduce((a, q) => a + q.loss, 0) / w.length }
    }),
    [31, 90, 180],
  )
  for (const p of val)
    for (let dx = -3; dx <= 3; dx++)
      for (let dy = -3; dy <= 3; dy++)
        if (dx * dx + dy * dy <= 9) set(px(p.step) + dx, py(p.loss) + dy, [230, 120, 20])
  return PNG.sync.write(png)
}

/** Writes the loss curve of a metrics JSONL history. */
export async function writeLossCurve(
  path: string,
  metrics: Record<string, number | string>[],
): Promise<void> {
  const train = metrics
    .filter((m) => m.type === 'train')
    .map((m) => ({ step: Number(m.step), loss: Number(m.loss) }))
  const val = metrics
    .filter((m) => m.type === 'eval')
    .map((m) => ({ step: Number(m.step), loss: Number(m.val_loss) }))
  await writeFile(path, lossCurvePng(train, val))
}
