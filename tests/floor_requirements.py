"""Prints pip requirements pinning the library's dependencies to the lowest versions it declares.

``make test`` installs them into a second environment (``.venv-floor``) and runs the library's
tests there, so the floors in ``pyproject.toml`` are checked, not guessed. Every ``>=`` floor of
``[project].dependencies`` and of ``FLOOR_EXTRAS`` becomes ``==``; other requirements are kept.

  python tests/floor_requirements.py [pyproject.toml]
"""

import pathlib
import re
import sys
import tomllib

# Packages of the optional extras whose floors are tested too (flax: the recipes for flax models).
FLOOR_EXTRAS = ("flax",)


def floor_pins(pyproject: dict) -> list[str]:
  project = pyproject["project"]
  extras = [r for reqs in project.get("optional-dependencies", {}).values() for r in reqs
            if re.match(r"[A-Za-z0-9_.-]+", r).group(0) in FLOOR_EXTRAS]
  pins = []
  for req in list(project["dependencies"]) + sorted(set(extras)):
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", req.strip())
    if not match:
      raise SystemExit(f"floor_requirements: {req!r} has no plain '>=' floor")
    pins.append(f"{match.group(1)}=={match.group(2)}")
  return pins


if __name__ == "__main__":
  path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
  print(" ".join(floor_pins(tomllib.loads(path.read_text()))))
