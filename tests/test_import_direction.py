"""Imports go one way: codec <- data_pipeline <- lm <- serving <- scripts, evaluation (README.md, "Import
direction"); inside lm: model <- checkpoint <- training <- adapters <- inference; inside codec: its core <-
backends <- training; inside data_pipeline: corpus <- ingest <- tokens <- loading."""

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


# Inside codec and data_pipeline (their __init__.py): part -> the parts of the same package it must not
# import. "core" is the modules right in the package (codec: base, audio, identity; data_pipeline: records,
# sharding). codec runs without its training code; data_pipeline's stages follow the data (corpus -> ingest
# -> tokens -> loading), while alignment and text serve several stages and are left out of the order.
PART_RULES = {
    "codec": {"core": {"backends", "training"}, "backends": {"training"}},
    "data_pipeline": {
        "core": {"corpus", "ingest", "alignment", "tokens", "loading", "text"},
        "corpus": {"ingest", "tokens", "loading"},
        "ingest": {"tokens", "loading"},
        "tokens": {"loading"},
    },
}


def package_part(module: str) -> str:
    """`codec.training.trainer` -> "training"; `codec.base` or `codec` itself -> "core"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (ROOT / parts[0] / parts[1]).is_dir() else "core"


@pytest.mark.parametrize("package", sorted(PART_RULES))
def test_package_parts_import_only_earlier_parts(package: str) -> None:
    rules, offenders = PART_RULES[package], {}
    for path in sorted((ROOT / package).rglob("*.py")):
        part = package_part(".".join(path.relative_to(ROOT).with_suffix("").parts))
        imported = {package_part(m) for m in imported_modules(path) if m.split(".")[0] == package}
        bad = sorted(imported & rules.get(part, set()))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    parts = {p.name for p in (ROOT / package).iterdir() if (p / "__init__.py").is_file()} | {"core"}
    named = set(rules) | set().union(*rules.values())
    assert named <= parts, f"{package}: PART_RULES names parts that do not exist: {sorted(named - parts)}"
    assert not offenders, f"{package} parts import later parts: {offenders}"
