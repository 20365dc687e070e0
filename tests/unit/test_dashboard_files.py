"""The dashboard's static files ship in the wheel, and they stay within the page's Content-Security-Policy."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from api.ui import CSP, STATIC_DIR

ROOT = Path(__file__).resolve().parents[2]


def test_every_dashboard_file_is_in_the_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["api"]
    files = [p.relative_to(STATIC_DIR.parent.parent).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()]
    assert "static/ui/index.html" in files
    missing = [f for f in files if not any(fnmatch(f, pattern) for pattern in patterns)]
    assert not missing, f"add these to [tool.setuptools.package-data] in pyproject.toml: {missing}"


def test_every_module_the_pages_import_exists() -> None:
    for script in STATIC_DIR.rglob("*.js"):
        for target in re.findall(r'^import .* from "(\.[^"]+)";', script.read_text(), flags=re.M):
            assert (script.parent / target).resolve().is_file(), f"{script.name} imports missing {target}"


def test_the_page_has_no_inline_script_or_style_that_the_csp_would_block() -> None:
    assert "unsafe-inline" not in CSP
    html = (STATIC_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "<style" not in html and " style=" not in html and " on" + "click=" not in html
    for script in STATIC_DIR.rglob("*.js"):
        text = script.read_text()
        # innerHTML would let a model name or an error message inject markup; the pages build nodes instead.
        assert "innerHTML" not in text and "eval(" not in text, script.name
