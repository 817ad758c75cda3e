// Starts the Node reference Durable Streams server (@durable-streams/server, pinned in
// package.json) for the benchmark: node node-server.mjs PORT [DATA_DIR]
// In memory when DATA_DIR is absent; file-backed (log files + LMDB) with it.
// Long-poll timeout from LONG_POLL_TIMEOUT_MS (default 30000).
import { DurableStreamTestServer } from "@durable-streams/server"

const port = Number(process.argv[2] ?? 4437)
const dataDir = process.argv[3]
const server = new DurableStreamTestServer({
  port,
  host: "127.0.0.1",
  longPollTimeout: Number(process.env.LONG_POLL_TIMEOUT_MS ?? 30000),
  ...(dataDir ? { dataDir } : {}),
})
await server.start()
console.log(`@durable-streams/server on http://127.0.0.1:${port} (${dataDir ? "files in " + dataDir : "in memory"})`)
const stop = async () => {
  await server.stop().catch(() => {})
  process.exit(0)
}
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
