"""Runnable examples: ``python -m examples.quickstart`` (MBAG in a plain JAX loop), ``python -m examples.demo`` (the main job)."""
