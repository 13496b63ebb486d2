"""deploy/base as written: the cross-checks of tests/deploy/manifests_check.py (deploy/check-deploy.sh
runs the same checks on every overlay rendered by `kubectl kustomize`, plus schema validation)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.deploy.manifests_check import check, load_docs

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "base"


def _base_docs() -> tuple[list[dict], str]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs = load_docs(BASE / r for r in kustomization["resources"])
    # The configMapGenerator, rendered the way kustomize does (fixed name: disableNameSuffixHash).
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True, "reload in place needs a fixed name"
    for gen in kustomization["configMapGenerator"]:
        data = {Path(f).name: (BASE / f).read_text() for f in gen["files"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return docs, (BASE / "gateway.yaml").read_text()


def test_base_manifests_cross_check() -> None:
    docs, _ = _base_docs()
    assert check(docs, "native") == []


def test_cross_check_catches_mistakes() -> None:
    docs, _ = _base_docs()
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    pod["terminationGracePeriodSeconds"] = 10
    pod["initContainers"][0]["volumeMounts"][0]["subPath"] = "gateway.yaml"
    pod["containers"][0]["ports"] = [{"name": "http", "containerPort": 8000}]
    errors = " | ".join(check(docs, "native"))
    assert "terminationGracePeriodSeconds" in errors
    assert "mounted as a directory" in errors
    assert "exposes ports" in errors
    assert check(docs, "classic")  # a native sidecar is not the classic form


def test_overlays_exist_and_build_on_base() -> None:
    for name in ("example", "classic-sidecar"):
        k = yaml.safe_load((REPO / "deploy" / "overlays" / name / "kustomization.yaml").read_text())
        assert k["kind"] == "Kustomization"
