/**
 * Bundles a TypeScript entry point into one ESM file with esbuild (already
 * installed as part of vitest's and tsx's toolchain), so tests that start it
 * many times pay a plain `node` start each time instead of a TypeScript
 * compile.
 */
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

export const bundleScript = async (entry: URL, outDir: string): Promise<string> => {
  const source = fileURLToPath(entry)
  const outfile = join(outDir, `${source.replace(/^.*[\\/]/, "").replace(/\.ts$/, "")}.mjs`)
  await build({
    entryPoints: [source],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outfile,
    logLevel: "error",
    // Some CommonJS dependencies call require(); give the ESM bundle one.
    banner: { js: "import { createRequire as __jeevesRequire } from 'node:module'; const require = __jeevesRequire(import.meta.url);" }
  })
  return outfile
}
