// Smoke test of the official TypeScript client (@durable-streams/client) against a running
// Durable Streams server. Usage: RIFFLE_URL=http://127.0.0.1:4437 node smoke.mjs
// Every step asserts; the first failure prints what failed and exits non-zero.
import assert from "node:assert/strict"
import {
  DurableStream,
  IdempotentProducer,
  StreamClosedError,
  stream,
} from "@durable-streams/client"

const base = (process.env.RIFFLE_URL ?? "").replace(/\/+$/, "")
if (!base) {
  console.error("ts smoke: set RIFFLE_URL, e.g. http://127.0.0.1:4437")
  process.exit(2)
}
const run = `${Date.now()}-${process.pid}`
const urlOf = (name) => `${base}/v1/stream/ts-smoke-${run}-${name}`
const STEP_TIMEOUT_MS = 15_000

// Whole-run watchdog: a hung live read must fail the smoke, not hang CI.
const watchdog = setTimeout(() => {
  console.error(`ts smoke: FAIL: timed out after 90s (current step: ${current})`)
  process.exit(1)
}, 90_000)

let current = "(none)"
let passed = 0
async function step(name, fn) {
  current = name
  try {
    await fn()
    passed++
    console.log(`ok   ${name}`)
  } catch (err) {
    console.error(`FAIL ${name}`)
    console.error(err?.stack ?? err)
    process.exit(1)
  }
}

/** Resolves with the first value `pred` accepts from `values` pushed by a subscriber. */
function waiter(label) {
  let resolve
  const seen = []
  const promise = new Promise((r) => (resolve = r))
  const timer = setTimeout(
    () => resolve(Promise.reject(new Error(`timed out waiting for ${label}; saw ${JSON.stringify(seen)}`))),
    STEP_TIMEOUT_MS
  )
  return {
    push(v, done) {
      seen.push(v)
      if (done) {
        clearTimeout(timer)
        resolve(v)
      }
    },
    promise,
  }
}

function withTimeout(promise, label) {
  let timer
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${label}`)), STEP_TIMEOUT_MS)
    }),
  ]).finally(() => clearTimeout(timer))
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

let text // DurableStream handle, text/plain
let json // DurableStream handle, application/json
let jsonMid // offset after the first JSON message
let expectedText = ""
const expectedJson = []

await step("create text/plain stream", async () => {
  text = await DurableStream.create({ url: urlOf("text"), contentType: "text/plain" })
  assert.equal(text.url, urlOf("text"))
  const head = await text.head()
  assert.equal(head.exists, true)
  assert.match(head.contentType ?? "", /^text\/plain/)
  assert.ok(head.offset, "HEAD gives the tail offset")
  // idempotent re-create with the same config succeeds
  await DurableStream.create({ url: urlOf("text"), contentType: "text/plain" })
})

await step("create application/json stream", async () => {
  json = await DurableStream.create({ url: urlOf("json"), contentType: "application/json" })
  const head = await json.head()
  assert.match(head.contentType ?? "", /^application\/json/)
})

await step("append (text and JSON)", async () => {
  const before = (await text.head()).offset
  await text.append("hello ")
  await text.append("world")
  expectedText += "hello world"
  const after = (await text.head()).offset
  assert.notEqual(after, before, "tail offset advances")
  assert.ok(after > before, `offsets are lexicographically ordered (${before} < ${after})`)

  // The 0.2.7 client takes pre-serialized JSON (its README's "objects are serialized
  // automatically" is not what the code does); each append is one message.
  await json.append(JSON.stringify({ n: 1, s: "one" }))
  jsonMid = (await json.head()).offset
  await json.append(JSON.stringify([1, 2])) // one message whose value is an array
  expectedJson.push({ n: 1, s: "one" }, [1, 2])
})

await step("idempotent producer appends (text), duplicates are dropped", async () => {
  const errors = []
  const producerId = `ts-smoke-producer-${run}`
  const producer = new IdempotentProducer(text, producerId, {
    lingerMs: 0,
    onError: (e) => errors.push(e),
  })
  producer.append("|p0")
  producer.append("|p1")
  producer.append("|p2")
  await producer.flush()
  assert.deepEqual(errors, [], "producer reported no errors")
  assert.ok(producer.nextSeq >= 1, "a batch consumed a sequence number")
  await producer.detach() // keep the stream open
  expectedText += "|p0|p1|p2"

  // A second producer with the same (id, epoch) starts again at seq 0: the server must treat
  // its first batch as a duplicate of the stored (id, 0, 0), acknowledge it and not store it.
  const replay = new IdempotentProducer(text, producerId, {
    lingerMs: 0,
    onError: (e) => errors.push(e),
  })
  replay.append("|p0")
  await replay.flush()
  await replay.detach()
  assert.deepEqual(errors, [], "duplicate batch is acknowledged, not an error")

  // A new epoch (autoClaim-free restart) fences the old one and appends normally.
  const next = new IdempotentProducer(text, producerId, {
    epoch: 1,
    lingerMs: 0,
    onError: (e) => errors.push(e),
  })
  next.append("|e1")
  await next.flush()
  await next.detach()
  assert.deepEqual(errors, [])
  expectedText += "|e1"
})

await step("idempotent producer appends (JSON)", async () => {
  const errors = []
  const producer = new IdempotentProducer(json, `ts-smoke-json-producer-${run}`, {
    lingerMs: 0,
    onError: (e) => errors.push(e),
  })
  producer.append(JSON.stringify({ p: 0 }))
  producer.append(JSON.stringify({ p: 1 }))
  await producer.flush()
  await producer.detach()
  assert.deepEqual(errors, [])
  expectedJson.push({ p: 0 }, { p: 1 })
})

await step("catch-up read (text, offset -1, live: false)", async () => {
  const res = await stream({ url: urlOf("text"), offset: "-1", live: false })
  assert.equal(await res.text(), expectedText)
  assert.equal(res.upToDate, true)
  assert.equal(res.streamClosed, false)
  assert.equal(res.offset, (await text.head()).offset, "reader ends at the tail offset")
})

await step("catch-up read (JSON, offset -1, live: false)", async () => {
  const res = await json.stream({ offset: "-1", live: false })
  assert.deepEqual(await res.json(), expectedJson)
})

await step("catch-up read resumes from a mid-stream offset", async () => {
  const res = await json.stream({ offset: jsonMid, live: false })
  assert.deepEqual(await res.json(), expectedJson.slice(1))
  const tail = (await json.head()).offset
  const empty = await json.stream({ offset: tail, live: false })
  assert.deepEqual(await empty.json(), [], "nothing after the tail")
  assert.equal(empty.upToDate, true)
})

// Live readers stay open through the close step below, which checks they see EOF.
let lpRes, sseRes

await step("live long-poll read receives an append made after subscribing", async () => {
  const tail = (await text.head()).offset
  lpRes = await stream({ url: urlOf("text"), offset: tail, live: "long-poll" })
  const got = waiter("long-poll chunk 'lp-live'")
  lpRes.subscribeText(async (chunk) => {
    got.push(chunk.text, chunk.text.includes("lp-live"))
  })
  await sleep(300) // let the reader reach the tail and park in a long-poll
  await text.append("|lp-live")
  expectedText += "|lp-live"
  const received = await got.promise
  assert.ok(received.includes("lp-live"), `got ${JSON.stringify(received)}`)
  assert.equal(lpRes.live, "long-poll")
})

await step("live SSE read receives an append made after subscribing (text)", async () => {
  const tail = (await text.head()).offset
  sseRes = await stream({ url: urlOf("text"), offset: tail, live: "sse" })
  const got = waiter("SSE chunk 'sse-live'")
  sseRes.subscribeText(async (chunk) => {
    got.push(chunk.text, chunk.text.includes("sse-live"))
  })
  await sleep(300)
  await text.append("|sse-live")
  expectedText += "|sse-live"
  const received = await got.promise
  assert.ok(received.includes("sse-live"), `got ${JSON.stringify(received)}`)
})

await step("live SSE read receives an append made after subscribing (JSON)", async () => {
  const tail = (await json.head()).offset
  const res = await json.stream({ offset: tail, live: "sse" })
  const got = waiter("SSE JSON item {live: true}")
  res.subscribeJson(async (batch) => {
    got.push(batch.items, batch.items.some((i) => i?.live === true))
  })
  await sleep(300)
  await json.append(JSON.stringify({ live: true }))
  expectedJson.push({ live: true })
  const items = await got.promise
  assert.deepEqual(items, [{ live: true }])
  res.cancel()
})

await step("close stream; live readers observe EOF", async () => {
  const result = await text.close()
  assert.ok(result.finalOffset, "close returns the final offset")
  assert.equal(result.finalOffset, (await text.head()).offset)
  // Both sessions end by themselves at EOF (the client stops reconnecting) ...
  await withTimeout(lpRes.closed, "long-poll reader session to end after close")
  await withTimeout(sseRes.closed, "SSE reader session to end after close")
  // ... and report the stream as closed.
  assert.equal(lpRes.streamClosed, true, "long-poll reader: streamClosed")
  assert.equal(sseRes.streamClosed, true, "SSE reader: streamClosed")
})

await step("closed stream: HEAD, catch-up read and append", async () => {
  const head = await text.head()
  assert.equal(head.streamClosed, true, "HEAD reports closed")
  const res = await stream({ url: urlOf("text"), offset: "-1", live: false })
  assert.equal(await res.text(), expectedText, "data stays readable after close")
  assert.equal(res.streamClosed, true)
  await assert.rejects(text.append("late"), (e) => e instanceof StreamClosedError || /closed/i.test(String(e)))
  // close without body is idempotent
  await text.close()
})

await step("idempotent producer close (JSON stream) ends a live reader", async () => {
  const tail = (await json.head()).offset
  const res = await json.stream({ offset: tail, live: "long-poll" })
  const items = []
  const last = waiter("JSON long-poll reader to get the final message")
  res.subscribeJson(async (batch) => {
    items.push(...batch.items)
    last.push(batch, batch.streamClosed)
  })
  const producer = new IdempotentProducer(json, `ts-smoke-closer-${run}`, { lingerMs: 0 })
  const result = await producer.close(JSON.stringify({ done: true }))
  expectedJson.push({ done: true })
  assert.ok(result.finalOffset)
  // (res.closed can resolve before the subscriber has been handed the last batch)
  const lastBatch = await last.promise
  await withTimeout(res.closed, "JSON long-poll reader session to end after close")
  assert.equal(res.streamClosed, true)
  assert.equal(lastBatch.streamClosed, true, "the final batch carries streamClosed")
  assert.deepEqual(items, [{ done: true }])
  const all = await json.stream({ offset: "-1", live: false })
  assert.deepEqual(await all.json(), expectedJson)
  assert.equal(all.streamClosed, true)
})

await step("delete streams", async () => {
  await text.delete()
  await json.delete()
  assert.equal((await text.head()).exists, false, "HEAD after delete: exists false (404)")
  assert.equal((await json.head()).exists, false)
})

clearTimeout(watchdog)
console.log(`ts-smoke: ${passed} passed, 0 failed`)
process.exit(0)
