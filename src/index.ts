/**
 * jeevesagent: the production-hardening runtime for multi-tenant LLM agents,
 * built on Effect 3.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as Agent from "./Agent.js"

/**
 * @since 0.1.0
 */
export * as AgentEvent from "./AgentEvent.js"

/**
 * @since 0.1.0
 */
export * as Approval from "./Approval.js"

/**
 * @since 0.1.0
 */
export * as AuditLog from "./AuditLog.js"

/**
 * @since 0.1.0
 */
export * as Budget from "./Budget.js"

/**
 * @since 0.1.0
 */
export * as Hooks from "./Hooks.js"

/**
 * @since 0.1.0
 */
export * as Memory from "./Memory.js"

/**
 * @since 0.1.0
 */
export * as Model from "./Model.js"

/**
 * @since 0.1.0
 */
export * as Permissions from "./Permissions.js"

/**
 * @since 0.1.0
 */
export * as RunContext from "./RunContext.js"

/**
 * @since 0.1.0
 */
export * as Secrets from "./Secrets.js"

/**
 * @since 0.1.0
 */
export * as Telemetry from "./Telemetry.js"

/**
 * @since 0.1.0
 */
export * as Tool from "./Tool.js"
