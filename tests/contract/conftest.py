"""Fixtures of the contract tests: the real CLIs from npm, local fakes of their model APIs.

Opt-in (marker ``contract``): skipped unless ``RH_CONTRACT=1``. The CLIs are installed
with ``npm install --prefix <cache>`` (``RH_CONTRACT_CACHE``, default
``~/.cache/runnerhost/contract-clis``) at the versions ``RH_CLAUDE_CODE_VERSION``
(default ``2.1``) and ``RH_CODEX_VERSION`` (default ``0.171``), once per cache.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

CLAUDE_PKG, CODEX_PKG = "@anthropic-ai/claude-code", "@openai/codex"
INSTALL_TIMEOUT_S = float(os.environ.get("RH_CONTRACT_INSTALL_TIMEOUT_S", "600"))


@dataclass(frozen=True)
class RealCLIs:
    claude: str
    codex: str
    claude_version: str
    codex_version: str


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RH_CONTRACT") == "1":
        return
    skip = pytest.mark.skip(reason="contract tests need RH_CONTRACT=1 (they install the real CLIs from npm)")
    for item in items:
        if "contract" in item.keywords:
            item.add_marker(skip)


def _installed_version(prefix: Path, package: str) -> str | None:
    manifest = prefix / "node_modules" / package / "package.json"
    try:
        return json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _matches(version: str | None, wanted: str) -> bool:
    return version is not None and (version == wanted or version.startswith(wanted.rstrip(".") + "."))


@pytest.fixture(scope="session")
def real_clis() -> RealCLIs:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("RH_CONTRACT=1 asks for the contract tests, but npm is not installed")  # opted in: no skip
    prefix = Path(os.environ.get("RH_CONTRACT_CACHE") or Path.home() / ".cache" / "runnerhost" / "contract-clis")
    prefix.mkdir(parents=True, exist_ok=True)
    wanted = {CLAUDE_PKG: os.environ.get("RH_CLAUDE_CODE_VERSION", "2.1"),
              CODEX_PKG: os.environ.get("RH_CODEX_VERSION", "0.171")}
    missing = [f"{pkg}@{ver}" for pkg, ver in wanted.items() if not _matches(_installed_version(prefix, pkg), ver)]
    if missing:
        proc = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                               "--loglevel=error", *missing], capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S)
        if proc.returncode != 0:
            pytest.fail(f"npm install {' '.join(missing)} failed: {proc.stderr[-2000:]}")
    bin_dir = prefix / "node_modules" / ".bin"
    clis = RealCLIs(claude=str(bin_dir / "claude"), codex=str(bin_dir / "codex"),
                    claude_version=_installed_version(prefix, CLAUDE_PKG) or "?",
                    codex_version=_installed_version(prefix, CODEX_PKG) or "?")
    for path in (clis.claude, clis.codex):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is not executable after the install")
    return clis


@pytest.fixture(scope="session")
def contract_report(tmp_path_factory):
    """What the real CLIs did, written to ``$RH_CONTRACT_REPORT`` (default: a temp file) at the end."""
    report: dict = {}
    yield report
    target = os.environ.get("RH_CONTRACT_REPORT") or str(tmp_path_factory.getbasetemp() / "contract-report.json")
    Path(target).write_text(json.dumps(report, indent=2, sort_keys=True))
    print(f"\ncontract report: {target}\n{json.dumps(report, indent=2, sort_keys=True)}")
