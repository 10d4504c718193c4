/**
 * Tracing and metrics settings of the agent.
 *
 * Spans and metrics go through effect's `Tracer` and `Metric`; this service
 * says whether the agent records them and how user ids appear in attributes.
 * With {@link layerNone} the agent records nothing and pays nothing.
 *
 * @example
 * ```ts
 * import { Telemetry } from "jeevesagent"
 *
 * const Off = Telemetry.layerNone
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Layer from "effect/Layer"
import { createHash } from "node:crypto"

/**
 * How a user id appears in span and metric attributes: as is, as a short
 * SHA-256 prefix, or not at all (to keep metric cardinality bounded).
 *
 * @since 0.1.0
 * @category models
 */
export type UserIdAttribute = "raw" | "hashed" | "omit"

/**
 * The telemetry service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly enabled: boolean
  readonly userIdAttribute: UserIdAttribute
}

/**
 * The telemetry service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Telemetry extends Context.Tag("jeevesagent/Telemetry")<Telemetry, Service>() {}

/**
 * Telemetry off.
 *
 * @since 0.1.0
 * @category constructors
 */
export const none: Service = Object.freeze({ enabled: false, userIdAttribute: "omit" })

/**
 * The layer of {@link none}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerNone: Layer.Layer<Telemetry> = Layer.succeed(Telemetry, none)

/**
 * Records spans and metrics through whatever `Tracer` and metric exporters
 * the program provides (for OpenTelemetry, `Telemetry.layerOtel`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: { readonly userIdAttribute?: UserIdAttribute | undefined }): Layer.Layer<Telemetry> =>
  Layer.succeed(Telemetry, { enabled: true, userIdAttribute: options?.userIdAttribute ?? "hashed" })

/**
 * The attribute value for `userId` under `mode` (`undefined` = omit).
 *
 * @since 0.1.0
 * @category utils
 */
export const userIdValue = (mode: UserIdAttribute, userId: string | null): string | undefined => {
  switch (mode) {
    case "omit":
      return undefined
    case "raw":
      return userId ?? "anonymous"
    case "hashed":
      return userId === null ? "anonymous" : createHash("sha256").update(userId).digest("hex").slice(0, 16)
  }
}
