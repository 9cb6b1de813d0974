"""Batched linear algebra used by MBAG (public)."""

from mbag._src.linalg import RootInfo
from mbag._src.linalg import guarded_sherman_morrison
from mbag._src.linalg import matrix_root
from mbag._src.linalg import newton_schulz
from mbag._src.linalg import sherman_morrison
from mbag._src.linalg import sherman_morrison_with_denominator

__all__ = ("RootInfo", "guarded_sherman_morrison", "matrix_root", "newton_schulz",
           "sherman_morrison", "sherman_morrison_with_denominator")
