/**
 * KeyStore port: API keys. Only a SHA-256 hash of each secret is stored; the
 * visible prefix (`pgpt_…`) and the last four characters are kept to show in
 * listings. A key belongs to one tenant and carries scopes.
 */

/**
 * `admin` manages the key's own tenant (its keys, its models, its webhook
 * secret); `operator` is the platform's: every tenant's usage, public models,
 * keys above the default limits and operator keys. Only an operator grants
 * `operator` (the bootstrap key PGPT_API_KEY, `pgpt keys create`, or an
 * operator key through POST /v1/admin/keys).
 */
export const SCOPES = ['generate', 'batch', 'fine-tune', 'admin', 'operator'] as const
export type Scope = (typeof SCOPES)[number]

export interface ApiKeyRecord {
  id: string
  tenant: string
  name: string
  scopes: Scope[]
  /** Hex SHA-256 of the full secret. */
  hash: string
  /** e.g. `pgpt_ab12…wxyz`, safe to show. */
  display: string
  createdAt: number
  revokedAt?: number
  /** Per-key overrides of the default limits. */
  limits?: { requestsPerMinute?: number; tokensPerMinute?: number }
}

export interface KeyStore {
  readonly name: string
  insert(rec: ApiKeyRecord): Promise<void>
  findByHash(hash: string): Promise<ApiKeyRecord | null>
  get(id: string): Promise<ApiKeyRecord | null>
  list(tenant?: string): Promise<ApiKeyRecord[]>
  revoke(id: string, at: number): Promise<ApiKeyRecord | null>
  close?(): Promise<void>
}
