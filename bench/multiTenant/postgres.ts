/**
 * The bench's scratch database: created fresh on the server the bench is
 * pointed at, dropped when the bench ends.
 */
import pg from "pg"

const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

const onServer = async <A>(adminUrl: string, f: (client: pg.Client) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5_000 })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end().catch(() => undefined)
  }
}

export interface ScratchDatabase {
  readonly url: string
  readonly drop: () => Promise<void>
}

/** The database of `options`: the one given (kept), or a fresh scratch one (dropped). */
export const benchDatabase = (options: { readonly postgresUrl: string; readonly database?: string | undefined }) =>
  options.database !== undefined ?
    Promise.resolve<ScratchDatabase>({ url: options.database, drop: () => Promise.resolve() }) :
    createScratchDatabase(options.postgresUrl)

export const createScratchDatabase = async (adminUrl: string): Promise<ScratchDatabase> => {
  const name = `jeeves_bench_mt_${process.pid}_${Math.random().toString(36).slice(2, 10)}`
  await onServer(adminUrl, (client) => client.query(`CREATE DATABASE "${name}"`)).catch((error: unknown) => {
    throw new Error(`cannot create a scratch database on ${adminUrl} (set JEEVES_BENCH_PG_URL): ${String(error)}`)
  })
  return {
    url: withDatabase(adminUrl, name),
    drop: () => onServer(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)).then(() => undefined)
  }
}
