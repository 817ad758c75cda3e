import { runConformanceTests } from "@durable-streams/server-conformance-tests"

// The subscription tests (`__ds`) run too: their webhook receiver listens on 127.0.0.1, so the
// server under test must run with subscriptions.allow_localhost_webhooks on.
runConformanceTests({ baseUrl: process.env.CONFORMANCE_TEST_URL, subscriptions: true })
