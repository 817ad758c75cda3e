"""Smoke test of the official Python client (PyPI `durable-streams`) against a running server.

Usage: RIFFLE_URL=http://127.0.0.1:4437 .venv/bin/python smoke.py
Every step asserts; the first failure prints what failed and exits non-zero.

durable-streams 0.1.0 (the latest on PyPI) predates two protocol features, so two steps go
around the client, and say so:
- it has no idempotent producer: the producer step drives Producer-Id/-Epoch/-Seq through the
  client's own per-request header hook (a callable header value) on an ordinary append;
- it has no close() and does not read Stream-Closed: the close step POSTs `Stream-Closed: true`
  on the handle's HTTP client, and EOF is observed as the end of the live SSE response plus the
  `Stream-Closed: true` header on the reader's response.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

from durable_streams import (
    DurableStream,
    DurableStreamError,
    StreamExistsError,
    StreamNotFoundError,
    stream,
)

BASE = os.environ.get("RIFFLE_URL", "").rstrip("/")
if not BASE:
    print("py smoke: set RIFFLE_URL, e.g. http://127.0.0.1:4437", file=sys.stderr)
    sys.exit(2)

RUN = f"{int(time.time() * 1000)}-{os.getpid()}"
TIMEOUT = 15.0  # per HTTP request; the server's long-poll timeout must be shorter


def url_of(name: str) -> str:
    return f"{BASE}/v1/stream/py-smoke-{RUN}-{name}"


current = "(none)"
passed = 0


def _watchdog(signum, frame):  # noqa: ARG001
    print(f"py smoke: FAIL: timed out after 90s (current step: {current})", file=sys.stderr, flush=True)
    os._exit(1)


signal.signal(signal.SIGALRM, _watchdog)
signal.alarm(90)


def step(name):
    def run(fn):
        global current, passed
        current = name
        try:
            fn()
        except BaseException:  # noqa: BLE001
            print(f"FAIL {name}", flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
            os._exit(1)
        passed += 1
        print(f"ok   {name}", flush=True)
        return fn

    return run


def later(delay: float, fn) -> threading.Thread:
    """Run fn on another thread after delay seconds (an append made after subscribing)."""
    errors: list[BaseException] = []

    def body():
        time.sleep(delay)
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.errors = errors  # type: ignore[attr-defined]
    t.start()
    return t


def joined(t: threading.Thread) -> None:
    t.join(TIMEOUT)
    assert not t.is_alive(), "background append did not finish"
    if t.errors:  # type: ignore[attr-defined]
        raise t.errors[0]  # type: ignore[attr-defined]


state: dict = {"expected_text": "", "expected_json": []}


@step("create text/plain stream")
def _():
    h = DurableStream.create(url_of("text"), content_type="text/plain", timeout=TIMEOUT)
    state["text"] = h
    head = h.head()
    assert head.exists is True
    assert (head.content_type or "").startswith("text/plain"), head
    assert head.offset, "HEAD gives the tail offset"
    # idempotent re-create with the same config succeeds ...
    DurableStream.create(url_of("text"), content_type="text/plain", timeout=TIMEOUT).close()
    # ... and with a different config is a conflict
    try:
        DurableStream.create(url_of("text"), content_type="application/json", timeout=TIMEOUT)
    except StreamExistsError:
        pass
    else:
        raise AssertionError("re-create with another content type must raise StreamExistsError (409)")


@step("create application/json stream")
def _():
    h = DurableStream.create(url_of("json"), content_type="application/json", timeout=TIMEOUT)
    state["json"] = h
    assert (h.head().content_type or "").startswith("application/json")


@step("append (text and JSON)")
def _():
    h: DurableStream = state["text"]
    before = h.head().offset
    r1 = h.append("hello ")
    r2 = h.append("world")
    state["expected_text"] += "hello world"
    assert before < r1.next_offset < r2.next_offset, (before, r1, r2)
    assert h.head().offset == r2.next_offset

    j: DurableStream = state["json"]
    r = j.append({"n": 1, "s": "one"})
    state["json_mid"] = r.next_offset
    j.append([1, 2])  # one message whose value is an array
    state["expected_json"] += [{"n": 1, "s": "one"}, [1, 2]]


@step("idempotent producer appends (Producer-* headers through the client), duplicate dropped")
def _():
    seq = {"n": 0}
    producer = DurableStream(
        url_of("text"),
        content_type="text/plain",
        batching=False,
        timeout=TIMEOUT,
        headers={
            "Producer-Id": f"py-smoke-producer-{RUN}",
            "Producer-Epoch": "0",
            "Producer-Seq": lambda: str(seq["n"]),
        },
    )
    try:
        for i in range(3):
            seq["n"] = i
            producer.append(f"|p{i}")
        state["expected_text"] += "|p0|p1|p2"
        # Retry of (id, 0, 1): acknowledged with 204 and not stored again. The client accepts
        # 204 but insists on Stream-Next-Offset, which the protocol does not require on a
        # duplicate (the Node reference server omits it): accept exactly that complaint.
        seq["n"] = 1
        try:
            producer.append("|p1")
        except ValueError as e:
            assert "Stream-Next-Offset" in str(e), e
        # the sequence goes on after the duplicate
        seq["n"] = 3
        producer.append("|p3")
        state["expected_text"] += "|p3"
        # a gap is refused (409)
        seq["n"] = 9
        try:
            producer.append("|gap")
        except DurableStreamError:
            pass
        else:
            raise AssertionError("a sequence gap must be refused")
    finally:
        producer.close()


@step("catch-up read (text, offset -1, live=False)")
def _():
    with stream(url_of("text"), offset="-1", live=False, timeout=TIMEOUT) as res:
        assert res.read_text() == state["expected_text"]
        assert res.up_to_date
        assert res.offset == state["text"].head().offset
        assert res.headers.get("stream-closed") != "true"


@step("catch-up read (JSON, offset -1 and mid-stream offset)")
def _():
    j: DurableStream = state["json"]
    with j.stream(offset="-1", live=False) as res:
        assert res.read_json() == state["expected_json"]
    with j.stream(offset=state["json_mid"], live=False) as res:
        assert res.read_json() == state["expected_json"][1:]
    with j.stream(offset=j.head().offset, live=False) as res:
        assert res.read_json() == []
        assert res.up_to_date


@step("live long-poll read receives an append made after subscribing")
def _():
    h: DurableStream = state["text"]
    tail = h.head().offset
    # The client's first long-poll request already waits at the tail, so append from another
    # thread while it waits.
    t = later(0.5, lambda: h.append("|lp-live"))
    state["expected_text"] += "|lp-live"
    got = ""
    with h.stream(offset=tail, live="long-poll") as res:
        for chunk in res.iter_text():
            got += chunk
            if "|lp-live" in got:
                break
        assert got == "|lp-live", got
        assert res.offset == h.head().offset
    joined(t)


@step("live SSE read receives an append made after subscribing (JSON)")
def _():
    j: DurableStream = state["json"]
    tail = j.head().offset
    t = later(0.5, lambda: j.append({"live": True}))
    state["expected_json"].append({"live": True})
    with j.stream(offset=tail, live="sse") as res:
        assert (res.headers.get("content-type") or "").startswith("text/event-stream")
        for item in res.iter_json():
            assert item == {"live": True}, item
            break
    joined(t)


@step("live SSE read receives an append; closing the stream ends it (EOF)")
def _():
    h: DurableStream = state["text"]
    tail = h.head().offset
    t = later(0.5, lambda: h.append("|sse-live"))
    state["expected_text"] += "|sse-live"
    got = ""
    with h.stream(offset=tail, live="sse") as res:
        events = res.iter_text()
        for chunk in events:
            got += chunk
            if "|sse-live" in got:
                break
        assert got == "|sse-live", got
        joined(t)

        # Close the stream (no close() in this client: POST Stream-Closed: true on its client).
        r = h._client.post(h.url, headers={"Stream-Closed": "true"}, timeout=TIMEOUT)
        assert r.status_code == 204, (r.status_code, r.text)
        assert r.headers.get("stream-closed") == "true"
        assert r.headers.get("stream-next-offset") == h.head().offset
        closed_at = time.monotonic()

        # The server ends the SSE response after its final control event; the sync client does
        # not reconnect, so the iterator simply ends. It must end promptly and with no data.
        rest = list(events)
        assert rest == [], rest
        waited = time.monotonic() - closed_at
        assert waited < 5.0, f"SSE response ended {waited:.1f}s after close, not at once"


@step("closed stream: catch-up and long-poll readers see Stream-Closed, append refused")
def _():
    h: DurableStream = state["text"]
    with stream(url_of("text"), offset="-1", live=False, timeout=TIMEOUT) as res:
        assert res.read_text() == state["expected_text"], "data stays readable after close"
        assert res.headers.get("stream-closed") == "true", res.headers
    tail = h.head().offset
    start = time.monotonic()
    # only the first response is looked at: this client would poll a closed stream forever
    res = h.stream(offset=tail, live="long-poll")
    try:
        assert res.headers.get("stream-closed") == "true", res.headers
        assert res.status in (200, 204), res.status
        assert time.monotonic() - start < 5.0, "long-poll on a closed stream must not wait"
    finally:
        res.close()
    try:
        h.append("late")
    except DurableStreamError:
        pass
    else:
        raise AssertionError("append to a closed stream must fail (409)")


@step("delete streams")
def _():
    for name in ("text", "json"):
        h: DurableStream = state[name]
        h.delete()
        try:
            h.head()
        except StreamNotFoundError:
            pass
        else:
            raise AssertionError(f"{name} stream still there after delete")
        h.close()


signal.alarm(0)
print(f"py-smoke: {passed} passed, 0 failed", flush=True)
