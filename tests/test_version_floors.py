"""CI's lowest-versions step installs .ci/lowest.txt: it must pin every dependency pyproject.toml declares, each at
its declared floor, so that the step tests the floors a user is promised."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
TESTS_NEED = {"pytest", "hypothesis"}  # the step's test runner, pinned at the dev extra's floors


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _floors(requirements: list[str]) -> dict[str, Version]:
    floors = {}
    for line in requirements:
        requirement = Requirement(line)
        (floor,) = [s.version for s in requirement.specifier if s.operator == ">="]
        floors[_name(requirement.name)] = Version(floor)
    return floors


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_name(name)] = Version(version)
    return pins


def test_the_lowest_versions_ci_installs_are_the_declared_floors():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _floors(project["dependencies"])
    dev = _floors(project["optional-dependencies"]["dev"])
    pins = _pins()
    for name, floor in [*declared.items(), *((n, dev[n]) for n in TESTS_NEED)]:
        assert pins.get(name) == floor, f".ci/lowest.txt pins {name} at {pins.get(name)}, its declared floor is {floor}"
    extra = set(pins) - set(declared) - TESTS_NEED - {"torchvision"}  # timm's, pinned to torch's release
    assert not extra, f".ci/lowest.txt pins what pyproject.toml does not declare: {sorted(extra)}"
