import { describe, expect, it } from "vitest"
import { newId, ulid } from "../src/internal/ids.js"

describe("ids", () => {
  it("ulids are 26 Crockford base-32 characters, time first, and unique", () => {
    const ids = new Set(Array.from({ length: 10_000 }, () => ulid()))
    expect(ids.size).toBe(10_000)
    for (const id of [...ids].slice(0, 100)) expect(id).toMatch(/^[0-9A-HJKMNP-TV-Z]{26}$/)
    expect(ulid(0).slice(0, 10)).toBe("0000000000")
    expect(ulid(1_700_000_000_000).slice(0, 10)).toBe("01HF7YAT00")
    expect(ulid(2).slice(0, 10) < ulid(1_700_000_000_000).slice(0, 10)).toBe(true)
  })

  it("ids carry their prefix", () => {
    expect(newId("run")).toMatch(/^run_[0-9A-Z]{26}$/)
  })
})
