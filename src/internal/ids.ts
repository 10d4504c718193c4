import { randomFillSync } from "node:crypto"

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
const POOL_SIZE = 4096
const pool = new Uint8Array(POOL_SIZE)
let poolOffset = POOL_SIZE

const randomBytes10 = (): Uint8Array => {
  if (poolOffset + 10 > POOL_SIZE) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const bytes = pool.subarray(poolOffset, poolOffset + 10)
  poolOffset += 10
  return bytes
}

/**
 * A ULID (26 Crockford base-32 characters: 48 bits of time, 80 random bits).
 * Random bytes come from a pooled `randomFillSync` so an id costs well under
 * a microsecond.
 *
 * @internal
 */
export const ulid = (now: number = Date.now()): string => {
  let out = ""
  let time = now
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[time % 32] + out
    time = Math.floor(time / 32)
  }
  const bytes = randomBytes10()
  // 80 bits -> 16 characters of 5 bits each.
  let buffer = 0
  let bits = 0
  for (let i = 0; i < 10; i++) {
    buffer = (buffer << 8) | bytes[i]!
    bits += 8
    while (bits >= 5) {
      bits -= 5
      out += ALPHABET[(buffer >> bits) & 31]
    }
    buffer &= (1 << bits) - 1
  }
  return out
}

/** @internal */
export const newId = (prefix: string): string => `${prefix}_${ulid()}`
