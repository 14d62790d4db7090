/**
 * A tree of Maps keyed by a sequence of values (label values, a record's
 * tenant/key/model/kind): each lookup walks one Map per value. The values are
 * mostly the same string objects each time, whose hashes V8 keeps, so this is
 * cheaper on a hot path than joining them into one key string, which is built,
 * flattened and hashed on every lookup.
 */
export type ValueTree = Map<unknown, unknown>

/** The subtree of `tree` under `key`, made when missing. */
export function branch(tree: ValueTree, key: unknown): ValueTree {
  let next = tree.get(key) as ValueTree | undefined
  if (!next) {
    next = new Map()
    tree.set(key, next)
  }
  return next
}
