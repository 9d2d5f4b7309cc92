"""The boundaries STYLE.md draws, checked on the source: services stay apart, domains stay pure."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())
FRAMEWORKS = {
    "aiokafka",
    "pymongo",
    "redis",
    "fastapi",
    "starlette",
    "faust",
    "mode",
    "prometheus_client",
    "httpx",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_all_six_services_exist() -> None:
    assert SERVICES == ["analytics", "fraud", "inventory", "notification", "order", "payment"]


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service(service: str) -> None:
    for path in (ROOT / "services" / service).rglob("*.py"):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1:
                assert parts[1] == service, f"{path.relative_to(ROOT)} imports {module}"


@pytest.mark.parametrize("service", SERVICES)
def test_the_domain_is_plain_python(service: str) -> None:
    path = ROOT / "services" / service / "domain.py"
    for module in imported_modules(path):
        top = module.split(".")[0]
        allowed = top in sys.stdlib_module_names or module.startswith("shared.contracts")
        allowed = allowed or module.startswith(f"services.{service}.") and module.split(".")[-1] == "domain"
        assert allowed, f"{path.relative_to(ROOT)} imports {module}"
        assert top not in FRAMEWORKS


def test_shared_contracts_import_no_plumbing() -> None:
    for path in (ROOT / "shared" / "contracts").rglob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top in sys.stdlib_module_names or top in {"pydantic", "shared"}, f"{path} imports {module}"
            assert not module.startswith("shared.") or module.startswith("shared.contracts")
