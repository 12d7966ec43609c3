"""The architecture, enforced: the import contracts in pyproject.toml (`[tool.importlinter]`) hold.

Services import only `shared/`, never each other; `shared/` imports no service; the CLI
(`switchboard`) may compose services; the harness and the benchmarks import no test code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.stack import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(*config: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` run from the repository root (on `config`, default pyproject.toml)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *map(str, config)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


def test_import_contracts_are_kept() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "5 kept" in result.stdout, result.stdout


def test_a_broken_contract_fails_the_check(tmp_path: Path) -> None:
    # The edge does import shared/: a contract forbidding it must be reported broken, with the import named.
    config = tmp_path / "broken.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["switchboard_edge", "switchboard_shared"]\n\n'
        '[[tool.importlinter.contracts]]\nname = "edge without shared"\ntype = "forbidden"\n'
        'source_modules = ["switchboard_edge"]\nforbidden_modules = ["switchboard_shared"]\n'
    )
    result = lint_imports(config)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "switchboard_edge" in result.stdout, result.stdout
