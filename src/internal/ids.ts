import { randomFillSync } from "node:crypto"

const ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
const POOL_SIZE = 4096
const RANDOM_CHARS = 16
const pool = new Uint8Array(POOL_SIZE)
let poolOffset = POOL_SIZE

let cachedMillis = -1
let cachedTime = ""

/** The 10-character time part, cached for the current millisecond. */
const timePart = (millis: number): string => {
  if (millis === cachedMillis) return cachedTime
  let out = ""
  let time = millis
  for (let i = 0; i < 10; i++) {
    out = ALPHABET[time % 32] + out
    time = Math.floor(time / 32)
  }
  cachedMillis = millis
  cachedTime = out
  return out
}

const codes = new Array<number>(RANDOM_CHARS)

/**
 * A ULID (26 Crockford base-32 characters: 48 bits of time, 80 random bits).
 * Each random character takes the low 5 bits of one pooled random byte
 * (uniform, as 256 is a multiple of 32), so an id costs well under a
 * microsecond.
 *
 * @internal
 */
export const ulid = (now: number = Date.now()): string => {
  if (poolOffset + RANDOM_CHARS > POOL_SIZE) {
    randomFillSync(pool)
    poolOffset = 0
  }
  for (let i = 0; i < RANDOM_CHARS; i++) codes[i] = ALPHABET.charCodeAt(pool[poolOffset + i]! & 31)
  poolOffset += RANDOM_CHARS
  return timePart(now) + String.fromCharCode.apply(null, codes)
}

/** @internal */
export const newId = (prefix: string): string => `${prefix}_${ulid()}`
