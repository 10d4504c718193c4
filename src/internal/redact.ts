/**
 * Text redaction: well-known key shapes (patterns) and known secret values.
 *
 * Every rule here runs in time linear in the input, because redaction sits
 * on paths fed by untrusted text (tool output, model output, user prompts).
 * JavaScript's `RegExp` backtracks, so the patterns follow these rules:
 *
 * - a pattern is a literal prefix followed by one character class with a
 *   lower bound and no upper bound and nothing after it that can fail
 *   (`sk-[...]{16,}`): each match attempt either succeeds, consuming the whole
 *   run, or fails within the lower bound;
 * - a pattern that can fail after a long run (JWT: `eyJ...\.` needs a dot)
 *   may only start where the run starts (a look-behind that excludes the
 *   run's own class), so each run is scanned by a bounded number of starts;
 * - context patterns (AWS secret keys, connection strings, `Bearer`) use
 *   bounded repetition before the part they mask.
 *
 * PEM private key blocks are found with `indexOf`, not with a lazy
 * `[\s\S]*?` up to `END`, which is quadratic when there are many `BEGIN`s
 * and no `END`. Known values are found by one Aho–Corasick automaton over
 * every value and its encodings, so the cost does not grow with their number.
 * `test/redactLinear.test.ts` holds every rule to linear time on 1 MB
 * adversarial inputs.
 *
 * Most text holds no secret, so {@link redactPatterns} first asks one
 * combined regular expression whether any rule's marker (the literal every
 * match of the rule contains: `sk-`, `eyJ`, `://`, ...) occurs at all, and
 * then runs only the rules whose marker does.
 *
 * @internal
 */
import { Buffer } from "node:buffer"

/** @internal */
export const REDACTED = "[REDACTED]"

/** @internal */
export interface Rule {
  readonly name: string
  /**
   * Matches every text `apply` changes (and more): the literal each match of
   * the rule contains. Where it does not match, the rule is skipped.
   */
  readonly marker: RegExp
  readonly apply: (text: string) => string
}

type Replacer = (match: string, ...groups: Array<string>) => string

/**
 * A global `RegExp` rule; `replace` gets the match and its groups (the whole
 * match is masked by default). `marker` is a source with the rule's flags
 * (so a case-insensitive rule has a case-insensitive marker).
 */
const regexRule = (
  name: string,
  marker: string,
  source: string,
  flags = "g",
  replace: Replacer = () => REDACTED
): Rule => {
  const regex = new RegExp(source, flags)
  return { name, marker: new RegExp(marker, flags.replace("g", "")), apply: (text) => text.replace(regex, replace) }
}

/** A rule that keeps its first capture group (the context) and masks the rest. */
const contextRule = (name: string, marker: string, source: string, flags = "g"): Rule =>
  regexRule(name, marker, source, flags, (_match, context) => context + REDACTED)

/**
 * A token rule: `prefix` must not be inside a word (not after a letter or a
 * digit) unless it follows an escaped `\n`, `\r` or `\t` (text from JSON
 * logs) or a percent escape such as `%22` or `%3D` (URL-encoded text, where
 * the escape's last character is a letter or digit). The check is a
 * look-behind placed after the literal prefix: a look-behind in front of it
 * stops V8 from skipping ahead to the prefix and costs an order of magnitude
 * on clean text. A percent escape only admits a start two characters into a
 * run, so each run is still tried at a bounded number of starts.
 */
/**
 * What may come right before a credential inside a word: an escaped `\n`,
 * `\r` or `\t`, a `\uXXXX` escape (JSON logs; Go writes `<`, `>`, `&` so)
 * or a percent escape (URL-encoded text).
 */
const ESCAPE_BEFORE = String.raw`\\[nrt]|\\u[0-9A-Fa-f]{4}|%[0-9A-Fa-f]{2}`

const tokenRule = (name: string, prefix: string, rest: string, notBefore = "A-Za-z0-9"): Rule =>
  regexRule(
    name,
    prefix,
    String.raw`${prefix}(?<=(?:^|[^${notBefore}]|${ESCAPE_BEFORE})${prefix})${rest}`
  )

const AWS_SECRET_NAME = /secret|key|token|pass|pwd/i

/**
 * One bounded run for the key name, checked for a secret-ish word in the
 * replacer: cheaper than alternatives inside the pattern, which backtrack
 * through every split of the name.
 */
const awsSecretRule = regexRule(
  "aws-secret-access-key",
  "aws|secret_?access_?key",
  String.raw`(?<![A-Za-z0-9])(aws[A-Za-z0-9_.-]{0,40}|secret_?access_?key)` +
    String.raw`(["']?\s{0,8}(?:=>|:=|=|:)\s{0,8}["']?)[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])`,
  "gi",
  (match, name, separator) => (AWS_SECRET_NAME.test(name!) ? name + separator + REDACTED : match)
)

const PEM_BEGIN = "-----BEGIN "
const PEM_END = "-----END "
const PEM_DASHES = "-----"
const PEM_MAX_LABEL = 100
const PEM_LABEL_CHARS = /^[A-Z0-9 _-]*$/

/** The end of the `-----` that closes the label starting at `labelStart`, or -1. */
const pemLabelEnd = (text: string, labelStart: number): number => {
  const end = text.indexOf(PEM_DASHES, labelStart)
  return end === -1 || end - labelStart > PEM_MAX_LABEL ? -1 : end
}

const isPrivateKeyLabel = (label: string): boolean =>
  (label.endsWith("PRIVATE KEY") || label.endsWith("PRIVATE KEY BLOCK")) && PEM_LABEL_CHARS.test(label)

/**
 * Masks `-----BEGIN ... PRIVATE KEY-----` through its `-----END ...-----`
 * line. A block with no end (a truncated log) is masked to the end of the
 * text: what follows a private key header is the key. Every search moves
 * forward, so the scan is linear.
 */
const redactPem = (text: string): string => {
  let from = text.indexOf(PEM_BEGIN)
  if (from === -1) return text
  let out = ""
  let copied = 0
  while (from !== -1) {
    const labelStart = from + PEM_BEGIN.length
    const labelEnd = pemLabelEnd(text, labelStart)
    if (labelEnd === -1 || !isPrivateKeyLabel(text.slice(labelStart, labelEnd))) {
      from = text.indexOf(PEM_BEGIN, labelStart)
      continue
    }
    out += text.slice(copied, from) + REDACTED
    const end = text.indexOf(PEM_END, labelEnd + PEM_DASHES.length)
    if (end === -1) return out
    const footerEnd = pemLabelEnd(text, end + PEM_END.length)
    copied = footerEnd === -1 ? end + PEM_END.length : footerEnd + PEM_DASHES.length
    from = text.indexOf(PEM_BEGIN, copied)
  }
  return out + text.slice(copied)
}

/**
 * The pattern rules, in the order they run. Masked text (`[REDACTED]`) does
 * not match any of them, so redaction is idempotent.
 *
 * @internal
 */
export const RULES: ReadonlyArray<Rule> = [
  { name: "private-key", marker: new RegExp(PEM_BEGIN), apply: redactPem },
  // `aws_secret_access_key = ...`, `AWS_SECRET_ACCESS_KEY: "..."`, `"SecretAccessKey": "..."`:
  // 40 base64 characters are too generic alone, so a key name must come right before.
  awsSecretRule,
  // `scheme://user:password@host`: keeps the user, masks the password. The userinfo runs to the last `@`
  // of the authority (a raw `@` in a password, an e-mail address as the user); the authority ends at `/`,
  // `?`, `#`, whitespace, a quote or an angle bracket. Linear: each run ends at the next `://` (a `/`).
  contextRule(
    "connection-string-password",
    "://",
    String.raw`((?<![a-z0-9+.-])[a-z][a-z0-9+.-]{1,30}://[^\s:/?#"'<>]*:)[^\s/?#"'<>]+(?=@[^\s@/?#"'<>]*(?:[\s/?#"'<>]|$))`,
    "gi"
  ),
  contextRule("bearer-token", "bearer", String.raw`(Bearer(?<=(?:^|\W|${ESCAPE_BEFORE})Bearer)\s{1,8})[A-Za-z0-9._~+/-]{16,}=*`, "gi"),
  contextRule(
    "basic-auth",
    "authorization",
    String.raw`(Authorization(?<=(?:^|\W|${ESCAPE_BEFORE})Authorization)["']?\s{0,4}[:=]\s{0,4}["']?Basic\s{1,8})[A-Za-z0-9+/]{4,}={0,2}`,
    "gi"
  ),
  tokenRule("anthropic", "sk-ant-", "[A-Za-z0-9_-]{8,}"),
  tokenRule("openai", "sk-", "(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{16,}"),
  tokenRule("aws-access-key-id", "(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)", "[A-Z0-9]{16}(?![A-Za-z0-9])"),
  tokenRule("github-token", "(?:ghp|gho|ghu|ghs|ghr)_", "[A-Za-z0-9_]{20,}"),
  tokenRule("github-fine-grained-pat", "github_pat_", "[A-Za-z0-9_]{22,}"),
  tokenRule("slack-token", "(?:xox[abposre]|xapp)-", "[A-Za-z0-9-]{10,}"),
  regexRule(
    "slack-webhook",
    String.raw`hooks\.slack\.com/`,
    String.raw`(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_-]{20,}`
  ),
  tokenRule("google-api-key", "AIza", "[A-Za-z0-9_-]{35,}"),
  // Three base64url parts; the header is JSON, so it starts with `eyJ`. The start must not be
  // inside a base64url run, which keeps the scan linear (see the module comment).
  tokenRule("jwt", "eyJ", String.raw`[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*`, "A-Za-z0-9_-")
]

/**
 * No rule matches fewer characters than this: `ab://:p@` (a connection
 * string with a one-character scheme and password and no user).
 *
 * @internal
 */
export const MIN_PATTERN_MATCH_LENGTH = 8

/**
 * Whether any rule's marker occurs: their union, case-insensitive (a
 * superset of the case-sensitive ones). One scan instead of one per rule.
 */
const ANY_MARKER = new RegExp(RULES.map((rule) => `(?:${rule.marker.source})`).join("|"), "i")

/** @internal */
export const redactPatterns = (text: string): string => {
  if (text.length < MIN_PATTERN_MATCH_LENGTH || !ANY_MARKER.test(text)) return text
  let out = text
  // Each marker is tested on the text its rule is about to see, so a rule
  // runs whenever it could change it.
  for (const rule of RULES) if (rule.marker.test(out)) out = rule.apply(out)
  return out
}

// ---------------------------------------------------------------------------
// Known values
// ---------------------------------------------------------------------------

/** Values shorter than this are not masked: they would mask ordinary words. */
export const MIN_KNOWN_VALUE_LENGTH = 6

/**
 * Base64 forms shorter than this, found at a shifted alignment, are not
 * masked: 10 characters carry 60 bits, so a chance match in other base64 text
 * is negligible, while shorter fragments would mask ordinary words.
 */
const MIN_SHIFTED_BASE64_LENGTH = 10

/**
 * The value's base64 characters when it sits `shift` bytes (0, 1 or 2) into
 * a longer encoded text, such as `base64("user:" + value)`: the characters
 * whose six bits all come from the value. The partial characters at each
 * edge depend on the neighbouring bytes, so they are left out.
 */
const shiftedBase64 = (bytes: Buffer, shift: number, encoding: "base64" | "base64url"): string => {
  const encoded = Buffer.concat([Buffer.alloc(shift), bytes]).toString(encoding)
  return encoded.slice(Math.ceil((8 * shift) / 6), Math.floor((8 * (shift + bytes.length)) / 6))
}

/**
 * The forms a value can take in text: itself, JSON-escaped, URL-encoded,
 * form-encoded (`URLSearchParams`: a space is `+`), base64 and base64url
 * (alone, and inside a longer encoded text at each byte alignment) and hex.
 */
/** How many bytes of a Buffer `util.inspect` shows (`buffer.INSPECT_MAX_BYTES`, 50 unless changed). */
const INSPECTED_BYTES = 50

const spacedHex = (hex: string): string => hex.replace(/(..)(?!$)/g, "$1 ")

/** `text` cut into lines of `width` characters joined by `newline`. */
const wrapped = (text: string, width: number, newline: string): string => {
  const lines: Array<string> = []
  for (let at = 0; at < text.length; at += width) lines.push(text.slice(at, at + width))
  return lines.join(newline)
}

const encodedForms = (value: string): Array<string> => {
  const bytes = Buffer.from(value, "utf8")
  const hex = bytes.toString("hex")
  const json = JSON.stringify(value).slice(1, -1)
  const percent = encodeURIComponent(value)
  const forms = [
    value,
    json,
    // Other producers' JSON: PHP escapes `/`; Go escapes `<`, `>`, `&` (and U+2028, U+2029) as `\u00XX`.
    json.replace(/\//g, "\\/"),
    json.replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`),
    percent,
    // Percent escapes with lowercase hex digits are the same URL.
    percent.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()),
    new URLSearchParams({ v: value }).toString().slice(2),
    bytes.toString("base64").replace(/=+$/, ""),
    bytes.toString("base64url"),
    hex,
    hex.toUpperCase(),
    // Bytes as Node prints a Buffer (`<Buffer 70 26 ...>`), which shows at most its first 50 bytes.
    spacedHex(hex),
    ...(bytes.length > INSPECTED_BYTES ? [spacedHex(hex.slice(0, 2 * INSPECTED_BYTES))] : [])
  ]
  // Strict RFC 3986 percent-encoding (OAuth, AWS SigV4, curl, Python's `quote(v, safe="")`): `!'()*` escaped too.
  const strict = percent.replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
  if (strict !== percent) forms.push(strict, strict.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()))
  // JSON with every non-ASCII character escaped (Python's `json.dumps`, Ruby's `ascii_only`), in either case.
  const ascii = json.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)
  if (ascii !== json) forms.push(ascii, ascii.replace(/\\u[0-9a-f]{4}/g, (escape) => `\\u${escape.slice(2).toUpperCase()}`))
  // Base64 wrapped in lines, as `base64` (76 columns), MIME (76, CRLF) and PEM (64) write it.
  const base64 = bytes.toString("base64")
  for (const [width, newline] of [[76, "\n"], [76, "\r\n"], [64, "\n"]] as const) {
    if (base64.length > width) forms.push(wrapped(base64.replace(/=+$/, ""), width, newline))
  }
  for (const encoding of ["base64", "base64url"] as const) {
    for (let shift = 0; shift < 3; shift++) {
      const form = shiftedBase64(bytes, shift, encoding)
      if (form.length >= MIN_SHIFTED_BASE64_LENGTH) forms.push(form)
    }
  }
  return forms
}

/** Stretches of text to mask: `[starts[k], ends[k])`, ordered and not overlapping. */
interface Intervals {
  readonly starts: Array<number>
  readonly ends: Array<number>
}

/**
 * Below this many strings an automaton keeps its root's transitions in a Map:
 * filling and scanning the dense 65 536-entry table would cost more than
 * building the rest.
 */
const DENSE_ROOT_MIN_FORMS = 256

/**
 * An Aho–Corasick automaton over UTF-16 code units. The root's transitions
 * are a dense table when there are many values (most characters of a text
 * leave the root at once); the other nodes mostly have one child (secrets
 * share few prefixes), kept in typed arrays, with a Map for the rest.
 */
class Automaton {
  private readonly rootNext: Int32Array | undefined
  private readonly rootMap = new Map<number, number>()
  private readonly firstChar: Int32Array
  private readonly firstChild: Int32Array
  /** Children beyond the first, for the few nodes that have them. */
  private readonly moreChildren = new Map<number, Map<number, number>>()
  private readonly fail: Int32Array
  /** The length of the longest value that ends at this node (through fail links), 0 if none. */
  private readonly longest: Int32Array

  constructor(values: ReadonlyArray<string>) {
    this.rootNext = values.length >= DENSE_ROOT_MIN_FORMS ? new Int32Array(0x10000).fill(-1) : undefined
    const capacity = values.reduce((n, value) => n + value.length, 1)
    this.firstChar = new Int32Array(capacity).fill(-1)
    this.firstChild = new Int32Array(capacity)
    this.fail = new Int32Array(capacity)
    this.longest = new Int32Array(capacity)
    const rootChildren: Array<number> = []
    let size = 1
    for (const value of values) {
      let node = 0
      for (let i = 0; i < value.length; i++) {
        const c = value.charCodeAt(i)
        let next = this.child(node, c)
        if (next === -1) {
          next = size++
          this.addChild(node, c, next)
          if (node === 0) rootChildren.push(next)
        }
        node = next
      }
      if (value.length > this.longest[node]!) this.longest[node] = value.length
    }
    // Breadth-first: a node's fail link is the node of its longest proper suffix.
    const queue = new Int32Array(size)
    let tail = 0
    for (const child of rootChildren) queue[tail++] = child
    for (let head = 0; head < tail; head++) {
      const node = queue[head]!
      if (this.firstChar[node] === -1) continue
      const children: Array<readonly [number, number]> = [[this.firstChar[node]!, this.firstChild[node]!]]
      this.moreChildren.get(node)?.forEach((child, c) => children.push([c, child]))
      for (const [c, child] of children) {
        let f = this.fail[node]!
        let target = this.child(f, c)
        while (target === -1 && f !== 0) {
          f = this.fail[f]!
          target = this.child(f, c)
        }
        const link = target === -1 ? 0 : target
        this.fail[child] = link
        if (this.longest[link]! > this.longest[child]!) this.longest[child] = this.longest[link]!
        queue[tail++] = child
      }
    }
  }

  private child(node: number, c: number): number {
    if (node === 0) return this.rootNext === undefined ? this.rootMap.get(c) ?? -1 : this.rootNext[c]!
    const first = this.firstChar[node]!
    if (first === c) return this.firstChild[node]!
    if (first === -1 || this.moreChildren.size === 0) return -1
    return this.moreChildren.get(node)?.get(c) ?? -1
  }

  private addChild(node: number, c: number, child: number): void {
    if (node === 0) {
      if (this.rootNext === undefined) this.rootMap.set(c, child)
      else this.rootNext[c] = child
    } else if (this.firstChar[node] === -1) {
      this.firstChar[node] = c
      this.firstChild[node] = child
    } else {
      let more = this.moreChildren.get(node)
      if (more === undefined) this.moreChildren.set(node, more = new Map())
      more.set(c, child)
    }
  }

  /**
   * The union of every occurrence of every value, as maximal overlapping
   * stretches, so a value overlapping another (or containing it) leaves no
   * fragment behind.
   */
  matches(text: string): Intervals {
    // Intervals [start, end) sorted by end; a new interval swallows those it overlaps.
    const starts: Array<number> = []
    const ends: Array<number> = []
    const rootNext = this.rootNext
    const rootMap = this.rootMap
    const longest = this.longest
    const fail = this.fail
    let node = 0
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i)
      if (node === 0) {
        // Most characters of most texts: from the root, back to the root.
        node = rootNext === undefined ? rootMap.get(c) ?? -1 : rootNext[c]!
        if (node === -1) {
          node = 0
          continue
        }
      } else {
        let next = this.child(node, c)
        while (next === -1 && node !== 0) {
          node = fail[node]!
          next = this.child(node, c)
        }
        node = next === -1 ? 0 : next
      }
      const length = longest[node]!
      if (length === 0) continue
      let start = i + 1 - length
      while (ends.length > 0 && ends[ends.length - 1]! > start) {
        start = Math.min(start, starts.pop()!)
        ends.pop()
      }
      starts.push(start)
      ends.push(i + 1)
    }
    return { starts, ends }
  }
}

/** The union of several automata's stretches, overlapping ones merged as one automaton would. */
const unionOf = (all: ReadonlyArray<Intervals>): Intervals => {
  const found = all.filter((intervals) => intervals.starts.length > 0)
  if (found.length <= 1) return found[0] ?? { starts: [], ends: [] }
  const order: Array<readonly [number, number]> = []
  for (const { ends, starts } of found) for (let k = 0; k < starts.length; k++) order.push([starts[k]!, ends[k]!])
  order.sort((a, b) => a[0] - b[0])
  const starts: Array<number> = []
  const ends: Array<number> = []
  for (const [start, end] of order) {
    if (ends.length > 0 && ends[ends.length - 1]! > start) {
      ends[ends.length - 1] = Math.max(ends[ends.length - 1]!, end)
    } else {
      starts.push(start)
      ends.push(end)
    }
  }
  return { starts, ends }
}

const mask = (text: string, { ends, starts }: Intervals): string => {
  if (starts.length === 0) return text
  let out = ""
  let copied = 0
  for (let k = 0; k < starts.length; k++) {
    out += text.slice(copied, starts[k]) + REDACTED
    copied = ends[k]!
  }
  return out + text.slice(copied)
}

/** Values added together, with their forms; the automaton is built when first needed. */
interface Batch {
  readonly values: number
  readonly forms: Array<string>
  automaton: Automaton | undefined
}

/**
 * Secret values handed out by a Secrets service; `redact` masks each, in
 * every encoded form, with one pass per batch over the text.
 *
 * Adding a value must stay cheap when values keep arriving (one per-user
 * credential per run), so values are kept in batches, each with its own
 * automaton, like the digits of a binary counter: a new value is a batch of
 * one, and a batch merges into the one before it while that one is at most
 * twice its size. Batch sizes then fall by more than half from one to the
 * next (at most log2(n) + 1 batches), and a value's batch grows by half at
 * each merge, so each value is rebuilt O(log n) times in all, and the
 * largest batch only when the number of values has grown by half.
 *
 * Each batch is one more pass over the text, so a text at least as long as
 * every form together first merges all batches into one: the rebuild costs
 * no more than the passes it saves on that text.
 *
 * @internal
 */
export class KnownValues {
  private readonly values = new Set<string>()
  private batches: Array<Batch> = []
  /** The length of every form of every value together. */
  private formsLength = 0
  /** Automata built so far and the values they held, to test the cost of adding values. */
  readonly builds = { automata: 0, values: 0 }

  get size(): number {
    return this.values.size
  }

  add(value: string): void {
    // A value read from a file or a vault often ends in a newline the code using it trims.
    const trimmed = value.trim()
    if (trimmed !== value) this.add(trimmed)
    // Very short values would mask ordinary words; a value inside the marker would make
    // redaction non-idempotent.
    if (value.length < MIN_KNOWN_VALUE_LENGTH || this.values.has(value) || REDACTED.includes(value)) return
    // Recorded once its forms are computed: a value that fails here is not taken as masked.
    const forms = [...new Set(encodedForms(value))].filter((form) =>
      form.length >= MIN_KNOWN_VALUE_LENGTH && !REDACTED.includes(form)
    )
    this.values.add(value)
    for (const form of forms) this.formsLength += form.length
    let batch: Batch = { values: 1, forms, automaton: undefined }
    while (this.batches.length > 0 && this.batches[this.batches.length - 1]!.values <= 2 * batch.values) {
      const previous = this.batches.pop()!
      batch = { values: previous.values + batch.values, forms: previous.forms.concat(batch.forms), automaton: undefined }
    }
    this.batches.push(batch)
  }

  redact(text: string): string {
    if (this.batches.length === 0 || text.length === 0) return text
    if (this.batches.length > 1 && text.length >= this.formsLength) {
      const values = this.batches.reduce((n, batch) => n + batch.values, 0)
      this.batches = [{ values, forms: this.batches.flatMap((batch) => batch.forms), automaton: undefined }]
    }
    return mask(text, unionOf(this.batches.map((batch) => this.automatonOf(batch).matches(text))))
  }

  private automatonOf(batch: Batch): Automaton {
    if (batch.automaton === undefined) {
      batch.automaton = new Automaton(batch.forms)
      this.builds.automata++
      this.builds.values += batch.values
    }
    return batch.automaton
  }
}
