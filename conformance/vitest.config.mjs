// Runs only the conformance suite; the server under test is given by CONFORMANCE_TEST_URL.
import { defineConfig } from "vitest/config"

if (!process.env.CONFORMANCE_TEST_URL) {
  throw new Error("set CONFORMANCE_TEST_URL to the server's base URL, e.g. http://127.0.0.1:4437")
}

export default defineConfig({
  test: {
    include: ["conformance.test.mjs"],
    passWithNoTests: false,
  },
})
