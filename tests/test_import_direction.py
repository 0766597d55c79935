"""Imports go one way: codec <- data_pipeline <- lm <- serving <- scripts, evaluation (README.md, "Import
direction"); inside lm: model <- checkpoint <- training <- adapters <- inference."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the packages it must not import: the README's table
FORBIDDEN = {
    "codec": {"data_pipeline", "lm", "serving", "scripts", "evaluation"},
    "data_pipeline": {"lm", "serving", "scripts", "evaluation"},
    "lm": {"serving", "scripts", "evaluation"},
    "serving": {"scripts", "evaluation"},
}


def imported_top_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downstream(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no python files"
    offenders = {
        str(f.relative_to(ROOT)): sorted(imported_top_packages(f) & FORBIDDEN[package]) for f in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"imports reach back up the data flow: {offenders}"


# the parts of lm in data-flow order (lm/__init__.py): each may import only the parts before it
LM_PARTS = ("model", "checkpoint", "training", "adapters", "inference")


def lm_part(module: str) -> str | None:
    """`lm.training.trainer` -> "training"; None outside lm."""
    parts = module.split(".")
    return parts[1] if parts[0] == "lm" and len(parts) > 1 else None


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_lm_parts_import_only_earlier_parts() -> None:
    found, offenders = set(), {}
    for path in sorted((ROOT / "lm").rglob("*.py")):
        part = lm_part(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if part is None or part == "__init__":
            continue
        assert part in LM_PARTS, f"{path.relative_to(ROOT)}: lm part {part!r} is not in LM_PARTS"
        found.add(part)
        later = set(LM_PARTS[LM_PARTS.index(part) + 1 :])
        bad = sorted({lm_part(m) for m in imported_modules(path)} & later)
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert found == set(LM_PARTS), f"lm parts {sorted(set(LM_PARTS) - found)} have no module"
    assert not offenders, f"lm parts import later parts: {offenders}"


def readme_rule() -> dict[str, set[str]]:
    """The table of the README's "Import direction" section: package -> packages it must not import."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Import direction\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, 'README.md has no "## Import direction" section'
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \|$", section.group(1), re.MULTILINE)
    return {package: set(re.findall(r"`(\w+)`", banned)) for package, banned in rows}


def test_the_readme_states_the_rule_this_test_enforces() -> None:
    assert readme_rule() == FORBIDDEN
