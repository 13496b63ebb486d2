"""An open-loop HTTP/1.1 load generator: requests at evenly spaced times, latency from the time each was due.

A closed-loop tool (wrk) sends the next request only when the last one answered, so
a stall delays the requests that would have measured it ("coordinated omission").
Here request i is due at start + i/rate whatever happened before; it goes out on an
idle keep-alive connection (a new one is opened when none is idle, up to
--connections; beyond that it waits for one) and its latency runs from when it was
due, so time spent waiting behind a slow answer is counted, as a user would see it.

    python bench/open_loop.py --port 8080 --path /api/x --tokens tokens.txt --rate 1000 --duration 10

Prints one JSON object: achieved rate, status counts, errors, latency percentiles (ms).
Also importable (`run(...)`) by the other bench scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class _Client(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; answers need a Content-Length."""

    def __init__(self, on_done: Any) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.on_done = on_done
        self.due = 0.0
        self.busy = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.busy = True
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            close = False
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and "close" in value.lower():
                    close = True
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            self.busy = False
            self.on_done(self, int(head.split(" ", 2)[1]), close)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.busy:
            self.busy = False
            self.on_done(self, 0, True)  # status 0: the connection died under the request
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    connects: int = 0
    connect_errors: int = 0

    def summary(self, duration: float, rate: float, status_filter: int | None = None) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 3) if lat else None

        return {
            "offered_rate": rate, "duration_s": duration, "completed": len(lat),
            "achieved_rate": round(len(lat) / duration, 1),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "connects": self.connects, "connect_errors": self.connect_errors,
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "p999_ms": pct(99.9),
            "max_ms": round(lat[-1], 3) if lat else None,
        }  # fmt: skip


async def run(
    host: str, port: int, requests: list[bytes], rate: float, duration: float, connections: int,
    *, per_status: bool = False, preopen: int = 0,
) -> dict[str, Any]:
    """Offer `rate` req/s for `duration` s, cycling through the prebuilt `requests`; `preopen`
    connections are opened before the clock starts, so the start is not a connection storm."""
    loop = asyncio.get_running_loop()
    result = Result()
    by_status: dict[int, list[float]] = {}
    idle: deque[_Client] = deque()
    waiting: deque[tuple[bytes, float]] = deque()  # due but no connection free
    clients: list[_Client] = []
    opening = 0
    outstanding = 0
    tasks: set[asyncio.Task[None]] = set()  # connects under way (a reference, so none is collected early)

    def spawn_connect() -> None:
        task = loop.create_task(open_one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    finished = loop.create_future()

    def done(client: _Client, status: int, close: bool) -> None:
        nonlocal outstanding, live
        latency = (time.perf_counter() - client.due) * 1000
        result.latencies_ms.append(latency)
        result.statuses[status] += 1
        if per_status:
            by_status.setdefault(status, []).append(latency)
        outstanding -= 1
        if close or status == 0:
            live -= 1
            if client.transport is not None:
                client.transport.close()
        elif waiting:
            data, due = waiting.popleft()
            client.send(data, due)
            return
        else:
            idle.append(client)
        if waiting and (close or status == 0):
            spawn_connect()
        if outstanding == 0 and sending_over and not finished.done():
            finished.set_result(None)

    async def open_one() -> None:
        nonlocal opening, live
        opening += 1
        try:
            _, client = await loop.create_connection(lambda: _Client(done), host, port)
            result.connects += 1
            live += 1
            clients.append(client)
            if waiting:
                data, due = waiting.popleft()
                client.send(data, due)
            else:
                idle.append(client)
        except OSError:
            result.connect_errors += 1
            if waiting:  # the request that needed this connection fails as a status-0 answer
                nonlocal outstanding
                _, due = waiting.popleft()
                result.latencies_ms.append((time.perf_counter() - due) * 1000)
                result.statuses[0] += 1
                outstanding -= 1
        finally:
            opening -= 1

    live = 0  # connections open and usable
    sending_over = False
    for start_at in range(0, preopen, 100):
        await asyncio.gather(*(open_one() for _ in range(min(100, preopen - start_at))))
    interval = 1.0 / rate
    start = time.perf_counter() + 0.05
    total = int(rate * duration)
    for i in range(total):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        data = requests[i % len(requests)]
        outstanding += 1
        while idle:
            client = idle.pop()
            if client.transport is not None and not client.transport.is_closing():
                client.send(data, due)
                break
        else:
            waiting.append((data, due))
            if live + opening < connections:
                spawn_connect()
    sending_over = True
    if outstanding:
        try:
            await asyncio.wait_for(finished, 30)
        except TimeoutError:
            pass
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    summary = result.summary(duration, rate)
    summary["unanswered"] = outstanding
    if per_status:
        summary["by_status"] = {}
        for status, lats in sorted(by_status.items()):
            lats.sort()
            summary["by_status"][str(status)] = {
                "count": len(lats), "p50_ms": round(lats[len(lats) // 2], 3),
                "p99_ms": round(lats[min(len(lats) - 1, int(0.99 * len(lats)))], 3), "max_ms": round(lats[-1], 3),
            }  # fmt: skip
    return summary


def build_requests(host_header: str, path: str, tokens: list[str]) -> list[bytes]:
    if not tokens:
        return [f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\n\r\n".encode()]
    return [
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nAuthorization: Bearer {t}\r\n\r\n".encode() for t in tokens
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--tokens", help="a file with one token per line, cycled (none: no Authorization)")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=256, help="most connections open at once")
    parser.add_argument("--per-status", action="store_true", help="latency percentiles per status code too")
    parser.add_argument("--preopen", type=int, default=0, help="connections opened before the clock starts")
    args = parser.parse_args()
    tokens = Path(args.tokens).read_text().split() if args.tokens else []
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    requests = build_requests(f"{args.host}:{args.port}", args.path, tokens)
    print(json.dumps(asyncio.run(run(args.host, args.port, requests, args.rate, args.duration, args.connections,
                                     per_status=args.per_status, preopen=args.preopen))))  # fmt: skip


if __name__ == "__main__":
    main()
