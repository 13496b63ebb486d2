"""Every fuzz target's invariant over its checked-in seeds and every regression input (no atheris needed).

A crash the fuzzer finds is saved under tests/fuzz/regressions/<target>/ and replays
here on every `make test`, next to the fix that made it pass.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("jws", "jwe", "jwk", "config", "path", "extract", "edge")


def _cases() -> list[tuple[str, Path]]:
    cases = []
    for target in TARGETS:
        for folder in (ROOT / "fuzz" / "seeds" / target, Path(__file__).parent / "regressions" / target):
            if folder.is_dir():
                cases.extend((target, f) for f in sorted(folder.iterdir()) if f.is_file())
    return cases


@pytest.mark.parametrize(("target", "case"), _cases(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_invariant_holds(target: str, case: Path) -> None:
    module = importlib.import_module(f"fuzz.{target}")
    module.check(case.read_bytes())


def test_every_target_has_seeds() -> None:
    for target in TARGETS:
        assert any((ROOT / "fuzz" / "seeds" / target).iterdir()), target
