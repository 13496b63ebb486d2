"""DPoP replay across workers: a proof accepted by one worker is refused by its sibling (server.workers: 2).

Each exchange stays on its own open connection while the test asks the kernel which worker
holds the server side of it (/proc/net/tcp inode -> /proc/<pid>/fd), so the test knows, not
hopes, that the replay went to the other worker.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.proxy.dpop_client import DpopClient
from tests.proxy.harness import Issuer, Upstream, children, start_workers
from tests.proxy.test_dpop import dpop_config


def _server_socket_inode(server_port: int, client_port: int) -> str | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                return inode
    return None


def _owner(workers: list[int], inode: str) -> int | None:
    target = f"socket:[{inode}]"
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


async def _exchange(port: int, headers: dict[str, str], workers: list[int]) -> tuple[int, int | None]:
    """One request on a fresh keep-alive connection: the status, and the worker that answered it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lines}\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        inode = _server_socket_inode(port, writer.get_extra_info("sockname")[1])
        return status, _owner(workers, inode) if inode is not None else None
    finally:
        writer.close()


async def test_a_proof_used_on_one_worker_is_a_replay_on_the_other(
    tmp_path: Path, issuer: Issuer, upstream: Upstream
) -> None:
    proc, port, _ = await start_workers(tmp_path, dpop_config(), issuer, upstream)
    try:
        assert proc.proc is not None
        workers = children(proc.proc.pid)
        client = DpopClient()
        token = issuer.token(cnf={"jkt": client.jkt})
        crossed = 0
        served_by: set[int | None] = set()
        for _ in range(40):
            proof = client.proof("GET", f"http://127.0.0.1:{port}/api/x", token)
            headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
            first, first_worker = await _exchange(port, headers, workers)
            replay, replay_worker = await _exchange(port, headers, workers)
            assert (first, replay) == (200, 401)  # whichever worker sees the replay refuses it
            assert first_worker is not None and replay_worker is not None
            served_by.update((first_worker, replay_worker))
            crossed += first_worker != replay_worker
            if crossed >= 3:
                break
        assert served_by == set(workers)
        assert crossed >= 3, "the kernel never sent a replay to the other worker"
    finally:
        proc.kill()


async def test_a_nonce_from_one_worker_is_good_on_the_other(tmp_path: Path, issuer: Issuer, upstream: Upstream) -> None:
    proc, port, _ = await start_workers(tmp_path, dpop_config(nonce=True), issuer, upstream)
    try:
        assert proc.proc is not None
        workers = children(proc.proc.pid)
        client = DpopClient()
        token = issuer.token(cnf={"jkt": client.jkt})
        target = f"http://127.0.0.1:{port}/api/x"
        # Ask for a nonce: the worker that answers hands one out.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        proof = client.proof("GET", target, token)
        writer.write(f"GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: DPoP {token}\r\n"
                     f"DPoP: {proof}\r\nConnection: close\r\n\r\n".encode())
        head = (await asyncio.wait_for(reader.read(1 << 16), 10)).split(b"\r\n\r\n")[0].decode()
        writer.close()
        assert head.startswith("HTTP/1.1 401")
        nonce = next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("dpop-nonce:"))
        # Use it on fresh connections until both workers have accepted it.
        accepted_by: set[int | None] = set()
        for _ in range(40):
            headers = {"Authorization": f"DPoP {token}", "DPoP": client.proof("GET", target, token, nonce=nonce)}
            status, worker = await _exchange(port, headers, workers)
            assert status == 200
            accepted_by.add(worker)
            if accepted_by == set(workers):
                break
        assert accepted_by == set(workers)
    finally:
        proc.kill()
