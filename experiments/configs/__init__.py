"""Configs of the experiments (ml_collections), one file per entry point, presets inside.

Each file has ``get_config(preset)``; select a preset on the command line with
``--config=experiments/configs/cifar.py:short`` and override any field with
``--config.<field>=<value>``. ``experiments/configs/common.py`` holds the fields
every run has and the per-optimizer hyperparameters.
"""
