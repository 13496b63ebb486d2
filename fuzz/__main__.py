"""Run the fuzz targets under atheris: `python -m fuzz run [--seconds N] [TARGET...]` or `python -m fuzz one TARGET ARGS`.

`run` gives each target its own libFuzzer process for N seconds, with a working
corpus in fuzz/.work/<target> grown from the checked-in seeds in fuzz/seeds/<target>,
and prints (and writes to fuzz/.work/last-run.md) per target: seconds, executions,
coverage, corpus size and findings. A finding leaves its input in
fuzz/.work/crash-<target>-*; it becomes a regression in tests/fuzz/regressions/.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
# Which packages each target instruments for coverage (besides its own checks).
TARGETS: dict[str, tuple[str, ...]] = {
    "jws": ("gateway",),
    "jwk": ("gateway",),
    "config": ("gateway", "yaml"),
    "path": ("gateway",),
    "extract": ("gateway",),
    "edge": ("gateway", "aiohttp"),
    "jwe": ("gateway",),
}
_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)")
_STAT = re.compile(r"stat::(\w+):\s+(\d+)")


def one(name: str, args: list[str]) -> None:
    from fuzz.common import main

    sys.argv = [f"fuzz-{name}", *args]
    main(f"fuzz.{name}", TARGETS[name])


def run(names: list[str], seconds: int, seed: int | None = None) -> int:
    WORK.mkdir(exist_ok=True)
    rows = []
    for name in names:
        corpus = WORK / name
        corpus.mkdir(exist_ok=True)
        cmd = [
            sys.executable, "-m", "fuzz", "one", name, str(corpus), str(HERE / "seeds" / name),
            f"-max_total_time={seconds}", "-print_final_stats=1", "-timeout=30", "-rss_limit_mb=3072",
            f"-artifact_prefix={WORK}/crash-{name}-", "-max_len=8192",
        ]  # fmt: skip
        if seed is not None:  # CI: the same mutations every run, so a red run is a real finding to replay
            cmd.append(f"-seed={seed}")
        print(f"fuzz: {name} for {seconds}s", file=sys.stderr, flush=True)
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, errors="replace", check=False)
        elapsed = time.monotonic() - started
        log = proc.stderr
        (WORK / f"{name}.log").write_text(log)
        stats = dict(_STAT.findall(log))
        done = _DONE.findall(log)
        cov, ft, corp = (done[-1][1], done[-1][2], f"{done[-1][3]} ({done[-1][4]})") if done else ("?", "?", "?")
        crashes = sorted(str(p.name) for p in WORK.glob(f"crash-{name}-*"))
        finding = "none" if proc.returncode == 0 and not crashes else f"exit {proc.returncode}: {', '.join(crashes) or 'see log'}"
        rows.append((name, f"{elapsed:.0f}", stats.get("number_of_executed_units", "?"), stats.get("average_exec_per_sec", "?"), cov, ft, corp, finding))
        print(f"fuzz: {name}: {rows[-1]}", file=sys.stderr, flush=True)
    lines = [
        "| target | seconds | executions | exec/s | cov | ft | corpus (units, size) | findings |",
        "|---|---|---|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    report = "\n".join(lines) + "\n"
    (WORK / "last-run.md").write_text(report)
    print(report)
    return 0 if all(row[-1] == "none" for row in rows) else 1


def _main() -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="every (or the named) target for --seconds each")
    p_run.add_argument("--seconds", type=int, default=60)
    p_run.add_argument("--seed", type=int, default=None, help="libFuzzer's random seed (default: a new one each run)")
    p_run.add_argument("targets", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    p_one = sub.add_parser("one", help="one target in this process; the rest goes to libFuzzer")
    p_one.add_argument("target", choices=list(TARGETS))
    p_one.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args()
    if ns.command == "one":
        one(ns.target, ns.args)
        return 0
    unknown = set(ns.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    return run(ns.targets or list(TARGETS), ns.seconds, ns.seed)


if __name__ == "__main__":
    sys.exit(_main())
