"""The import-linter layers name every module of the shared contract, so none escapes the arrows."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import evfleet

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _contracts() -> dict[str, dict[str, object]]:
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_bottom_layer_lists_every_contract_module() -> None:
    layers = _contracts()["layers"]["layers"]
    assert isinstance(layers, list)
    bottom = {name.strip() for name in layers[-1].split(":")}
    modules = {f"evfleet.{m.name}" for m in pkgutil.iter_modules(evfleet.__path__)} - {"evfleet.app"}
    assert bottom == modules, "add new evfleet modules to the bottom layer in pyproject.toml"
    assert layers[0] == "evfleet.app"


def test_the_image_copies_every_package() -> None:
    """deploy/Dockerfile installs from a copy of the packages: a new top-level package must be in it."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = {pattern.rstrip("*") for pattern in config["include"]}
    dockerfile = (PYPROJECT.parent / "deploy" / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert packages <= copied, f"deploy/Dockerfile does not COPY {sorted(packages - copied)}"
