"""A small Dockerfile reader, enough to replay this project's Dockerfile without a Docker engine.

It understands FROM, ARG, ENV, WORKDIR, COPY (from the build context), RUN (shell form,
`--mount` flags dropped), USER, EXPOSE, HEALTHCHECK and ENTRYPOINT; line continuations
and comment lines. The replay maps the image's absolute paths (e.g. /opt/gateway) onto
a temporary directory, so the very same shell commands run on this machine.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> list[Stage]:
    instructions: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # comments (also inside continuations) and blank lines
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        joined = " ".join(p for p in buf if p)
        buf = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            parts = ins.args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif stages:
            stages[-1].instructions.append(ins)
        # instructions before the first FROM (ARG, parser directives) are not used here
    return stages


def load() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """`--mount=type=bind,... --chown=1:1 rest` -> ({'mount': ..., 'chown': ...}, 'rest')."""
    flags: dict[str, str] = {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        args = args.lstrip()
    return flags, args


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def expand(value: str, env: dict[str, str]) -> str:
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def env_pairs(args: str) -> list[tuple[str, str]]:
    """ENV/ARG arguments in `k=v k2="v 2"` form (ARG may have no default)."""
    pairs = []
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        pairs.append((key, value if sep else ""))
    return pairs


class Replay:
    """Runs the stages' steps on this machine, with image paths mapped under `root`.

    `python` in RUN lines is the base image's interpreter: here a fresh venv (with pip)
    made from the interpreter running the tests.
    """

    def __init__(self, root: Path, path_map: dict[str, Path], ignore_env: set[str], base_env: dict[str, str]) -> None:
        self.root = root
        self.path_map = path_map
        self.ignore_env = ignore_env
        self.base_env = base_env
        self.log: list[str] = []

    def map_path(self, value: str) -> str:
        # One pass, longest path first, so a mapped result is never mapped again.
        keys = sorted(self.path_map, key=len, reverse=True)
        pattern = "|".join(re.escape(k) for k in keys)
        return re.sub(
            rf"(?<![\w/.-])({pattern})(?=$|[/:\s\"'])", lambda m: str(self.path_map[m.group(1)]), value
        )

    def stage_env(self, stage: Stage) -> dict[str, str]:
        """The environment the stage's last instruction sees (ARG defaults and ENV)."""
        env = dict(self.base_env)
        for ins in stage.instructions:
            if ins.keyword in ("ARG", "ENV"):
                for key, value in env_pairs(ins.args):
                    if key in self.ignore_env:
                        continue
                    env[key] = expand(self.map_path(value), env)
        return env

    def run_stage(self, stage: Stage, timeout: float) -> dict[str, str]:
        env = dict(self.base_env)
        workdir = self.root
        for ins in stage.instructions:
            if ins.keyword in ("ARG", "ENV"):
                for key, value in env_pairs(ins.args):
                    if key not in self.ignore_env:
                        env[key] = expand(self.map_path(value), env)
            elif ins.keyword == "WORKDIR":
                workdir = Path(expand(self.map_path(ins.args), env))
                workdir.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                flags, rest = split_flags(ins.args)
                assert "from" not in flags, "replay copies from the build context only"
                *sources, dest = shlex.split(rest)
                target = Path(expand(self.map_path(dest), env))
                if not target.is_absolute():
                    target = workdir / target
                matched = [m for s in sources for m in sorted(glob.glob(str(REPO / s)))]
                assert matched, f"Dockerfile:{ins.line}: COPY matches nothing: {sources}"
                into_dir = dest.endswith("/") or len(sources) > 1
                for src in map(Path, matched):
                    if src.is_dir():  # Docker copies a directory's contents
                        shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                    elif into_dir:
                        target.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, target / src.name)
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, target)
            elif ins.keyword == "RUN":
                _, command = split_flags(ins.args)
                assert not command.startswith("["), "RUN steps are kept in shell form"
                command = self.map_path(command)
                self.log.append(command)
                proc = subprocess.run(
                    ["sh", "-ec", command], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
                )
                assert proc.returncode == 0, f"Dockerfile:{ins.line} failed ({proc.returncode}):\n{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return env

    @staticmethod
    def entrypoint(stage: Stage) -> list[str]:
        (ins,) = stage.all("ENTRYPOINT")
        argv = json.loads(ins.args)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        return argv


def make_base_python(where: Path) -> Path:
    """A stand-in for the base image's /usr/local/bin: a fresh interpreter with pip."""
    subprocess.run([os.environ.get("PYTHON_FOR_IMAGE_TEST", _base_interpreter()), "-m", "venv", str(where)], check=True, timeout=120)
    return where / "bin"


def _base_interpreter() -> str:
    import sys

    # sys.executable may itself be a venv's; `-m venv` from it still makes a clean venv.
    return sys.executable
