/**
 * Webhook signing secrets: one per tenant, derived from the deployment's
 * signing key, so nothing per tenant has to be stored and every process that
 * knows the key (worker, edge) computes the same secret:
 *
 *   secret(tenant) = "whsec_" + base64(HMAC-SHA256(signingKey, "pgpt-webhook:v1:" + tenant))
 *
 * A tenant gets its secret from the edge and verifies with any Standard
 * Webhooks library. Rotating the signing key rotates every tenant's secret.
 * The key comes from PGPT_WEBHOOK_SIGNING_KEY; the local profile, when it is
 * unset, creates one in `<PGPT_DATA_DIR>/webhook-signing-key` (mode 0600).
 */
import { createHmac, randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'

export function tenantWebhookSecret(signingKey: string, tenant: string): string {
  return `whsec_${createHmac('sha256', signingKey).update(`pgpt-webhook:v1:${tenant}`).digest('base64')}`
}

/** Read the key file, or create it with a fresh random key. */
export function loadOrCreateSigningKey(file: string): string {
  try {
    const key = readFileSync(file, 'utf8').trim()
    if (key.length >= 32) return key
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  mkdirSync(dirname(file), { recursive: true })
  const key = randomBytes(32).toString('base64url')
  try {
    writeFileSync(file, `${key}\n`, { mode: 0o600, flag: 'wx' })
    return key
  } catch (err) {
    // Another process created it first: use theirs.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return readFileSync(file, 'utf8').trim()
    throw err
  }
}
