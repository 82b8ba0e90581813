"""Locate the files shipped with the package: report templates and ready policies.

In a source checkout they are the top-level `templates/` and `policies/` folders; in an
installed wheel they are the `gate.templates` and `gate.policies` packages (see
pyproject.toml's package-dir), so a non-editable install finds them too.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _folder(name: str) -> Path:
    local = _CHECKOUT / name
    if local.is_dir() and (_CHECKOUT / "pyproject.toml").is_file():
        return local
    # gate.templates / gate.policies have no __init__.py (namespace packages), for which
    # files() returns a MultiplexedPath whose str() is not a path: go through `gate`.
    return Path(str(resources.files("gate").joinpath(name)))


def templates_dir() -> Path:
    return _folder("templates")


def policies_dir() -> Path:
    return _folder("policies")


def builtin_policy(name: str) -> Path | None:
    """The path of a ready policy by name (`default`, `strict`, `demo`), or None."""
    path = policies_dir() / f"{name}.yaml"
    return path if path.is_file() else None


def builtin_policy_names() -> list[str]:
    return sorted(p.stem for p in policies_dir().glob("*.yaml"))
