"""Configs: the paper's values in the presets, command-line overrides, every optimizer buildable."""

import pathlib

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from experiments import optimizers
from experiments import train
from experiments.configs import autoencoder
from experiments.configs import cifar
from experiments.configs import common
from experiments.configs import digits
from experiments.configs import mnist1d
from experiments.configs import mnist5k
from experiments.configs import shakespeare
from experiments import tasks

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
CONFIG_MODULES = {"cifar": cifar, "autoencoder": autoencoder, "digits": digits,
                  "mnist1d": mnist1d, "mnist5k": mnist5k, "shakespeare": shakespeare}
ALL_PRESETS = [(name, preset) for name, module in CONFIG_MODULES.items() for preset in module.PRESETS]


def test_cifar_paper_preset_has_the_papers_settings():
  c = cifar.get_config("paper")
  assert (c.task, c.dataset, c.preset, c.model.depth) == ("cifar", "cifar10", "paper", 56)
  assert (c.batch_size, c.num_epochs, tuple(c.lr_decay_epochs), c.lr_decay_factor) == (
      128, 200, (100, 150), 0.1)
  m = c.optimizer_config.mbag
  assert (m.block_size, m.initial_accumulator_value, m.momentum, m.root_interval,
          m.newton_schulz_steps) == (32, 0.01, 0.9, 50, 5)
  assert c.optimizer_config.adablock.block_size == 32
  assert (c.optimizer_config.kfac.curvature_update_period,
          c.optimizer_config.kfac.inverse_update_period) == (5, 50)
  assert (c.optimizer_config.shampoo.statistics_interval,
          c.optimizer_config.shampoo.root_interval) == (5, 50)


def test_autoencoder_paper_preset_has_the_papers_settings():
  c = autoencoder.get_config("paper")
  assert (c.task, c.batch_size, c.preset) == ("autoencoder", 512, "paper")
  m = c.optimizer_config.mbag
  assert (m.initial_accumulator_value, m.newton_schulz_steps, m.root_interval, m.momentum) == (
      0.1, 7, 50, 0.9)
  assert (c.optimizer_config.kfac.curvature_update_period,
          c.optimizer_config.shampoo.root_interval) == (5, 50)


def test_paper_presets_average_five_seeds_as_the_paper():
  assert cifar.get_config("paper").num_seeds == 5 and autoencoder.get_config("paper").num_seeds == 5
  assert cifar.get_config("short").num_seeds == 3 and digits.get_config("demo").num_seeds == 3


def test_paper_variants_take_their_modern_counterparts_rate_and_the_reference_defaults():
  c = mnist1d.get_config("reference")
  for variant, modern in common.PAPER_VARIANTS.items():
    assert c.learning_rates[variant] == c.learning_rates[modern]
  o = c.optimizer_config
  assert (o.shampoo_paper.epsilon, o.shampoo_paper.root_interval) == (1e-4, 50)
  assert (o.kfac_paper.kl_clip, o.kfac_paper.curvature_update_period) == (1e-2, 5)
  assert (o.adablock_paper.delta, o.adablock_paper.eps, o.adablock_paper.block_damping) == (
      1e-4, 1e-4, 1e-6)


def test_get_config_defaults_to_paper_and_rejects_unknown_presets():
  assert cifar.get_config().preset == "paper"
  assert autoencoder.get_config(None).preset == "paper"
  with pytest.raises(ValueError, match=r"unknown preset 'fast'.*\['paper', 'short', 'smoke'\]"):
    cifar.get_config("fast")


@pytest.mark.parametrize("name,preset", ALL_PRESETS)
def test_every_preset_resolves_and_builds_every_optimizer(name, preset):
  """Hyperparameter names must be those of the constructors (unknown names raise)."""
  for opt in common.ALL_OPTIMIZER_NAMES:
    config = CONFIG_MODULES[name].get_config(preset)
    config.optimizer = opt
    if config.task == "char_lm" and opt in tasks.CHAR_LM_UNSUPPORTED:
      with pytest.raises(ValueError, match="does not run on task 'char_lm'"):
        train.resolve_config(config)
      continue
    resolved = train.resolve_config(config)
    assert resolved.learning_rate == config.learning_rates[opt]
    built = optimizers.build_optimizer(resolved, lambda *a: None, resolved.learning_rate)
    assert built.name == opt


def test_autoencoder_architecture_follows_the_dataset_unless_set():
  config = autoencoder.get_config("paper")
  config.dataset = "curves"
  assert tuple(train.resolve_config(config).model.encoder_widths) == (400, 200, 100, 50, 25, 6)
  config.dataset = "faces"
  assert tuple(train.resolve_config(config).model.encoder_widths) == (2000, 1000, 500, 30)
  assert tuple(train.resolve_config(autoencoder.get_config("smoke")).model.encoder_widths) == (32, 8)


def _parse(argv):
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=False,
                                  sys_argv=["prog", *argv])
  fv(["prog", *argv])
  return fv.config


def test_command_line_selects_preset_and_overrides_fields():
  config = _parse([f"--config={CONFIG_DIR / 'cifar.py'}:smoke", "--config.optimizer=adam",
                   "--config.seed=3", "--config.learning_rate=0.5",
                   "--config.optimizer_config.mbag.block_size=8", "--config.lr_decay_epochs=(3,)",
                   "--config.track_bound=true"])
  assert (config.preset, config.optimizer, config.seed, config.learning_rate) == ("smoke", "adam", 3, 0.5)
  assert config.optimizer_config.mbag.block_size == 8
  assert tuple(config.lr_decay_epochs) == (3,)
  assert config.track_bound is True
  assert train.resolve_config(config).learning_rate == 0.5  # an explicit value beats the table


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, "batch_size must be an integer >= 1"),
    ("learning_rate", -1.0, "learning_rate must be a finite number > 0, got -1.0"),
    ("lr_decay_epochs", (150, 100), "lr_decay_epochs must be increasing"),
    ("task", "imagenet", "config.task='imagenet' is not a known task"),
])
def test_invalid_fields_are_named(field, value, message):
  config = cifar.get_config("smoke")
  config[field] = value
  with pytest.raises(ValueError, match=message):
    train.resolve_config(config)


def test_learning_rate_schedule_decays_at_the_epochs():
  config = train.resolve_config(cifar.get_config("paper"))
  schedule = train.learning_rate_schedule(config, steps_per_epoch=391)
  lr = config.learning_rate
  assert float(schedule(100 * 391 - 1)) == pytest.approx(lr)
  assert float(schedule(100 * 391)) == pytest.approx(0.1 * lr)
  assert float(schedule(150 * 391)) == pytest.approx(0.01 * lr)


def test_warmup_cosine_schedule_rises_from_zero_and_ends_at_the_final_fraction():
  config = cifar.get_config("smoke")
  config.lr_schedule, config.warmup_steps, config.lr_final_fraction = "warmup_cosine", 10, 0.1
  config.lr_decay_epochs = ()
  config = train.resolve_config(config)
  lr, total = config.learning_rate, 110
  schedule = train.learning_rate_schedule(config, steps_per_epoch=55, total_steps=total)
  # schedule(k) is the rate of the (k+1)-th step: linear from 0 over 10 steps, then
  # lr * (f + (1 - f) * (1 + cos(pi * (k - 10) / 99)) / 2), lr * f at the last step (k = 109).
  np.testing.assert_allclose([float(schedule(k)) for k in (0, 5, 10)], [0.0, 0.5 * lr, lr],
                             rtol=1e-6)
  for k in (30, 60, 109):
    want = lr * (0.1 + 0.9 * (1 + np.cos(np.pi * (k - 10) / 99)) / 2)
    np.testing.assert_allclose(float(schedule(k)), want, rtol=1e-5)
  np.testing.assert_allclose(float(schedule(total - 1)), 0.1 * lr, rtol=1e-6)
  config.warmup_steps = 109
  with pytest.raises(ValueError, match=r"warmup_steps=109 leaves no step to decay over: the run "
                                       r"has 110 steps"):
    train.learning_rate_schedule(config, steps_per_epoch=55, total_steps=total)


@pytest.mark.parametrize("fields,message", [
    (dict(lr_schedule="linear"), r"lr_schedule='linear' is not a known schedule; known: "
                                 r"\['step', 'warmup_cosine'\]"),
    (dict(warmup_steps=-1), "warmup_steps must be an integer >= 0, got -1"),
    (dict(lr_final_fraction=1.5), r"lr_final_fraction must be a number in \[0, 1\], got 1.5"),
    (dict(warmup_steps=5), r"warmup_steps=5 is not used by config.lr_schedule='step' "
                           r"\(only by \['warmup_cosine'\]\)"),
    (dict(lr_schedule="warmup_cosine", lr_decay_epochs=(1,)),
     r"lr_decay_epochs=\(1,\) is not used by config.lr_schedule='warmup_cosine'"),
    (dict(eval_every_steps=3), "eval_every_steps=3 must be a multiple of config.log_every_steps"),
])
def test_invalid_or_unused_schedule_fields_are_named(fields, message):
  config = cifar.get_config("smoke")
  config.lr_decay_epochs = ()
  for field, value in fields.items():
    config[field] = value
  with pytest.raises(ValueError, match=message):
    train.resolve_config(config)


def test_every_config_has_an_adamw_rate_and_the_neutral_schedule():
  for module in CONFIG_MODULES.values():
    for preset in module.PRESETS:
      c = module.get_config(preset)
      assert "adamw" in c.learning_rates
      if c.task != "char_lm":  # the language model's own table and schedule
        assert c.learning_rates.adamw == c.learning_rates.adam
        if preset != "study":  # the study's warm-up + cosine (tests/test_paired_study.py)
          assert (c.lr_schedule, c.warmup_steps, c.lr_final_fraction) == ("step", 0, 0.0)


def test_shakespeare_reference_preset_is_the_documented_benchmark():
  c = shakespeare.get_config("reference")
  assert (c.task, c.dataset, c.batch_size, c.train_subset, c.test_subset) == (
      "char_lm", "shakespeare", 24, 8_064, 384)
  assert c.num_epochs * c.train_subset // c.batch_size == 1008  # steps
  assert (c.lr_schedule, c.warmup_steps, c.lr_final_fraction) == ("warmup_cosine", 100, 0.1)
  assert (c.eval_every_steps, c.log_every_steps) == (84, 42)
  adamw = c.optimizer_config.adamw
  assert (adamw.weight_decay, adamw.mask, adamw.b2) == (0.1, "matrices", 0.99)
  m = c.optimizer_config.mbag
  assert (m.block_size, m.initial_accumulator_value, m.momentum, m.root_interval,
          m.newton_schulz_steps) == (32, 0.01, 0.9, 50, 5)
  assert shakespeare.get_config("scan").model.scan and not c.model.scan
  assert "--config=experiments/configs/shakespeare.py:reference" in shakespeare.__doc__


@pytest.mark.parametrize("module,path", [(cifar, "experiments/configs/cifar.py:paper"),
                                         (autoencoder, "experiments/configs/autoencoder.py:paper")])
def test_docstrings_hold_the_launch_command(module, path):
  assert f"--config={path}" in module.__doc__
