/** ES2024 string methods (Node 20 has them; the TypeScript lib here is ES2022). */
interface WellFormed {
  isWellFormed(): boolean
  toWellFormed(): string
}

/**
 * Whether `text` is well-formed UTF-16 (no lone surrogate).
 *
 * @internal
 */
export const isWellFormed = (text: string): boolean => (text as unknown as WellFormed).isWellFormed()

/**
 * `text` with each lone surrogate replaced by U+FFFD, as a UTF-8 store (or a
 * verifier in another language) would decode it; `text` itself when it has
 * none.
 *
 * @internal
 */
export const wellFormed = (text: string): string =>
  (text as unknown as WellFormed).isWellFormed() ? text : (text as unknown as WellFormed).toWellFormed()

/**
 * The first `max` UTF-16 units of `text`, one fewer when the last would be
 * the first half of a surrogate pair (a cut emoji is not well-formed text:
 * a provider's JSON parser may refuse it).
 *
 * @internal
 */
export const prefix = (text: string, max: number): string => {
  if (text.length <= max) return text
  const last = text.charCodeAt(max - 1)
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max)
}
