/**
 * Redaction patterns. Each is linear-time: no nested quantifiers, bounded
 * repetition of one character class after a fixed prefix.
 *
 * @internal
 */
const PATTERNS: ReadonlyArray<RegExp> = [
  /\bsk-ant-[A-Za-z0-9_-]{8,}/g,
  /\bsk-(?:proj-)?[A-Za-z0-9_-]{16,}/g,
  /\b(?:AKIA|ASIA)[A-Z0-9]{16}\b/g,
  /\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}/g,
  /\bgithub_pat_[A-Za-z0-9_]{20,}/g,
  /\bxox[abposr]-[A-Za-z0-9-]{10,}/g,
  /\bAIza[A-Za-z0-9_-]{35}/g,
  /\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}/g,
  /\bBearer [A-Za-z0-9._~+/-]{8,}=*/g
]

/** @internal */
export const REDACTED = "[REDACTED]"

/** @internal */
export const redactPatterns = (text: string): string => {
  let out = text
  for (const pattern of PATTERNS) out = out.replace(pattern, REDACTED)
  return out
}

/**
 * Secret values handed out by a Secrets service; `redact` masks each.
 *
 * @internal
 */
export class KnownValues {
  private readonly values = new Set<string>()
  private ordered: Array<string> = []

  add(value: string): void {
    // Very short values would mask ordinary words; they are not secrets worth the noise.
    if (value.length < 6 || this.values.has(value)) return
    this.values.add(value)
    this.ordered = [...this.values].sort((a, b) => b.length - a.length)
  }

  redact(text: string): string {
    let out = text
    for (const value of this.ordered) {
      if (out.includes(value)) out = out.split(value).join(REDACTED)
    }
    return out
  }
}
