"""Theorem 1 of the MBAG paper: its bound (sympy), its terms read from MBAG's state, a tracker.

- ``theory.bound``: the right-hand side, written once in sympy (``bound.RHS``), evaluated by
  ``bound.rhs(**terms)`` (numpy) and ``bound.rhs_jnp`` (jax).
- ``theory.terms``: pure functions of the optimizer state (log det ratio, gamma_t, tr H_0^{1/2}).
- ``theory.tracker``: ``init_tracker`` / ``update_tracker`` for any training loop.
- ``theory.newton_schulz``: convergence conditions of the root iteration, and the scalar theory.
- ``python -m theory.verify``: both sides of the bound on a quadratic, logistic regression and an MLP.
"""

from theory import bound
from theory.tracker import TrackerState
from theory.tracker import bound_rhs
from theory.tracker import init_tracker
from theory.tracker import update_tracker

__all__ = ("TrackerState", "bound", "bound_rhs", "init_tracker", "update_tracker")
