"""ARCHITECTURE.md stays true to the tree: every file and directory it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "llmlb_actors"


def _named_paths(text: str) -> set[str]:
    """Backticked names that look like paths: ``_actors/provider.py``, ``_cli/``."""
    names = set()
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.split(".PROTOCOLS")[0]
        if token.endswith((".py", "/")) and not set("(<") & set(token):
            names.add(token)
    return names


def _exists(name: str) -> bool:
    # Paths are relative to the package, to the repository, or to the last directory
    # named in the same row ("`_actors/_requests.py`, `dispatcher.py`").
    candidates = [PACKAGE / name, ROOT / name]
    candidates += [d / name for d in PACKAGE.rglob("*") if d.is_dir()]
    return any(c.exists() for c in candidates)


def test_every_path_in_architecture_exists() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    names = _named_paths(text)
    assert len(names) > 20, names  # the check is not vacuous
    missing = sorted(n for n in names if not _exists(n))
    assert missing == [], missing


def test_readme_links_it() -> None:
    assert "(ARCHITECTURE.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
