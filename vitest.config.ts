import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['**/*.test.ts'],
    exclude: ['**/node_modules/**', '.pgpt/**', 'dist/**', '.wrangler/**'],
    // Native addons (onnxruntime, better-sqlite3) are safest in child processes.
    pool: 'forks',
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // 2 cores on CI: more parallel files only thrash.
    maxWorkers: 2,
    reporters: ['default', './test/reporters/summary.ts'],
  },
})
