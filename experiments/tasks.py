"""Tasks: a registry from ``config.task`` to model, input pipeline and loss.

A :class:`Task` says how to build the flax model for a data set, how to turn a
batch of stored examples into model inputs and targets on the device (CIFAR
augmentation lives here), and its per-example loss and metrics. The training
loop is the same for every task; it only calls these functions.

Loss conventions (per example, then averaged over the batch):
- classification: softmax cross-entropy of the logits against the integer label;
  metric ``accuracy`` (1 if the argmax is the label).
- autoencoder: binary cross-entropy of the pixels, i.e. sigmoid cross-entropy of
  the logits against the pixel intensities in [0, 1], summed over the pixels
  (Martens 2010; kfac-jax's ``register_sigmoid_cross_entropy_loss`` convention);
  metrics ``squared_error``, the summed squared error of the Bernoulli means
  ``sigmoid(logits)`` (the number Hinton & Salakhutdinov 2006 report), and
  ``bce_per_pixel``, the loss divided by the number of pixels.
- character language model (``char_lm``): a stored row of ``T + 1`` tokens gives the
  inputs ``row[:, :-1]`` and the targets ``row[:, 1:]`` (next-token prediction); the
  per-example loss is the mean over the ``T`` positions of the softmax cross-entropy,
  in nats per token; metric ``bits_per_char`` = loss / ln 2.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import kfac_jax
import optax

from experiments import errors
from experiments import models

Array = jax.Array
PerExample = Callable[[Array, Array], tuple[Array, dict[str, Array]]]


@dataclasses.dataclass(frozen=True)
class Task:
  """What the shared training loop needs to know about one task.

  Attributes:
    name: the registry name (``config.task``).
    make_model: ``(config, dataset) -> flax module`` called as ``module(inputs, train=...)``.
    check_dataset: ``(dataset) -> None``; raises ValueError when the data set does not fit.
    train_inputs: ``(rng, x) -> inputs``: stored training examples to model inputs (jit-able).
    eval_inputs: ``(x) -> inputs`` for evaluation (jit-able, deterministic).
    targets: ``(x, y) -> targets`` of the loss.
    loss: ``(outputs, targets) -> (per_example_loss [B], {metric: per_example [B]})``.
    register_loss: ``(outputs, targets) -> None``: registers the loss with kfac-jax.
    metrics: the names of the per-example metrics ``loss`` returns.
    resolve_config: ``(config) -> None``: fills in the config fields the task
      derives (in place), so that ``config.json`` records them.
    dimension_numbers: ``(config) -> dimension numbers or None``: what the model declares
      about its parameters' axes (any form ``mbag.mbag``'s ``dimension_numbers`` takes, e.g.
      ``BlockDimensionNumbers(batch_axis=0)`` for a scanned stack), given to the MBAG-family
      optimizers by the registry; None: their default grouping.
  """

  name: str
  make_model: Callable[[Any, Any], nn.Module]
  check_dataset: Callable[[Any], None]
  train_inputs: Callable[[Array, Array], Array]
  eval_inputs: Callable[[Array], Array]
  targets: Callable[[Array, Array], Array]
  loss: PerExample
  register_loss: Callable[[Array, Array], None]
  metrics: tuple[str, ...]
  resolve_config: Callable[[Any], None] = lambda config: None
  dimension_numbers: Callable[[Any], Any] = lambda config: None


def softmax_cross_entropy(logits: Array, labels: Array) -> tuple[Array, dict[str, Array]]:
  """Per-example ``-log softmax(logits)[label]`` and ``accuracy`` (0/1)."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return loss, {"accuracy": correct}


def sigmoid_cross_entropy(logits: Array, targets: Array) -> tuple[Array, dict[str, Array]]:
  r"""Per-example :math:`\sum_i -t_i \log \sigma(z_i) - (1 - t_i) \log(1 - \sigma(z_i))`, squared error, per-pixel loss."""
  loss = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
  squared_error = jnp.sum(jnp.square(jax.nn.sigmoid(logits) - targets), axis=-1)
  return loss, {"squared_error": squared_error, "bce_per_pixel": loss / logits.shape[-1]}


def next_token_cross_entropy(logits: Array, targets: Array) -> tuple[Array, dict[str, Array]]:
  """Per-example mean over positions of ``-log softmax(logits)[target]`` (nats per token),
  and ``bits_per_char`` (the same in bits: divided by ln 2). ``logits [B, T, V]``, ``targets
  [B, T]``."""
  loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets), axis=-1)
  return loss, {"bits_per_char": loss / jnp.log(2.0)}


def _register_softmax(logits, labels):
  kfac_jax.register_softmax_cross_entropy_loss(logits, labels)


def _register_sigmoid(logits, targets):
  kfac_jax.register_sigmoid_cross_entropy_loss(logits, targets)


def _register_next_token(logits, targets):
  """The loss as kfac-jax sees it: one softmax cross-entropy per position, averaged over the
  ``B * T`` positions, which is the batch mean of the per-example position means."""
  kfac_jax.register_softmax_cross_entropy_loss(logits.reshape(-1, logits.shape[-1]),
                                               targets.reshape(-1))


def _as_float(x):
  return jnp.asarray(x, jnp.float32)


def _check_images(dataset) -> None:
  if dataset.x_train.ndim != 4 or dataset.x_train.shape[-1] != 3 or dataset.num_classes < 2:
    raise ValueError(f"task 'cifar' needs RGB images [N, H, W, 3] with class labels; data set "
                     f"{dataset.name!r} has x_train {dataset.x_train.shape} and "
                     f"num_classes={dataset.num_classes}")


def _check_flat_classification(dataset) -> None:
  if dataset.x_train.ndim != 2 or dataset.num_classes < 2:
    raise ValueError(f"tasks 'digits_mlp' and 'signal_cnn' need flat inputs [N, D] with class labels; data set "
                     f"{dataset.name!r} has x_train {dataset.x_train.shape} and "
                     f"num_classes={dataset.num_classes}")


def _check_flat_unit_interval(dataset) -> None:
  if dataset.x_train.ndim != 2:
    raise ValueError(f"task 'autoencoder' needs flat inputs [N, D] in [0, 1]; data set "
                     f"{dataset.name!r} has x_train {dataset.x_train.shape}")


def _check_token_rows(dataset) -> None:
  x = dataset.x_train
  if x.ndim != 2 or x.shape[1] < 2 or not jnp.issubdtype(x.dtype, jnp.integer) \
      or dataset.num_classes < 2:
    raise ValueError(f"task 'char_lm' needs integer token rows [N, T + 1] and the vocabulary "
                     f"size as num_classes; data set {dataset.name!r} has x_train {x.dtype} "
                     f"{x.shape} and num_classes={dataset.num_classes}")


def _char_lm_model(config, dataset) -> nn.Module:
  m = config.model
  return models.CharTransformer(vocab_size=dataset.num_classes,
                                context=dataset.x_train.shape[1] - 1, d_model=m.d_model,
                                num_heads=m.num_heads, num_layers=m.num_layers,
                                mlp_ratio=m.get("mlp_ratio", 4), scan=m.get("scan", False))


# kfac-jax 0.0.8's graph matcher registers the attention projections (DenseGeneral with
# several output axes) as dense layers whose curvature update then fails with a broadcasting
# error inside its jitted step; refused up front instead.
CHAR_LM_UNSUPPORTED = ("kfac", "kfac_paper")


def _resolve_char_lm(config) -> None:
  if config.optimizer in CHAR_LM_UNSUPPORTED:
    raise errors.ConfigError(
        f"config.optimizer={config.optimizer!r} does not run on task 'char_lm': kfac-jax "
        f"cannot estimate the curvature of the attention projections (DenseGeneral kernels "
        f"(d, heads, head_dim)); use another optimizer")


def _char_lm_dimension_numbers(config):
  from experiments.models import transformer  # pylint: disable=import-outside-toplevel
  return transformer.dimension_numbers(bool(config.model.get("scan", False)))


def _cifar_model(config, dataset) -> nn.Module:
  return models.CifarResNet(depth=config.model.depth, num_classes=dataset.num_classes)


def _mlp_model(config, dataset) -> nn.Module:
  return models.MLP(hidden_sizes=tuple(config.model.hidden_sizes), num_classes=dataset.num_classes)


def _signal_cnn_model(config, dataset) -> nn.Module:
  m = config.model
  return models.SignalCNN(num_classes=dataset.num_classes, channels=m.get("channels", 25),
                          kernel_sizes=tuple(m.get("kernel_sizes", (5, 3, 3))),
                          stride=m.get("stride", 2), padding=m.get("padding", 1))


def autoencoder_widths(config, dataset_name: str) -> tuple[int, ...]:
  """``config.model.encoder_widths``, or the paper's architecture of the data set when unset."""
  widths = config.model.get("encoder_widths")
  if widths:
    return tuple(int(w) for w in widths)
  if dataset_name not in models.ARCHITECTURES:
    raise ValueError(f"no autoencoder architecture for data set {dataset_name!r} (known: "
                     f"{sorted(models.ARCHITECTURES)}); set config.model.encoder_widths")
  return models.ARCHITECTURES[dataset_name]


def _resolve_autoencoder(config) -> None:
  config.model.encoder_widths = autoencoder_widths(config, config.dataset)
  config.model.kernel_init = config.model.get("kernel_init", "sparse")


def _autoencoder_model(config, dataset) -> nn.Module:
  return models.DeepAutoencoder(encoder_widths=autoencoder_widths(config, dataset.name),
                                output_dim=dataset.x_train.shape[-1],
                                kernel_init=config.model.get("kernel_init", "sparse"))


def _cifar_train_inputs(rng, x):
  from experiments.data import augment  # pylint: disable=import-outside-toplevel
  return augment.augment_cifar(rng, x)


def _cifar_eval_inputs(x):
  from experiments.data import augment  # pylint: disable=import-outside-toplevel
  return augment.normalize_cifar(x)


_CLASSIFICATION = dict(targets=lambda x, y: y, loss=softmax_cross_entropy,
                       register_loss=_register_softmax, metrics=("accuracy",))

TASKS: dict[str, Task] = {
    "cifar": Task(name="cifar", make_model=_cifar_model, check_dataset=_check_images,
                  train_inputs=_cifar_train_inputs, eval_inputs=_cifar_eval_inputs,
                  **_CLASSIFICATION),
    "digits_mlp": Task(name="digits_mlp", make_model=_mlp_model,
                       check_dataset=_check_flat_classification,
                       train_inputs=lambda rng, x: _as_float(x), eval_inputs=_as_float,
                       **_CLASSIFICATION),
    "signal_cnn": Task(name="signal_cnn", make_model=_signal_cnn_model,
                       check_dataset=_check_flat_classification,
                       train_inputs=lambda rng, x: _as_float(x), eval_inputs=_as_float,
                       **_CLASSIFICATION),
    "autoencoder": Task(name="autoencoder", make_model=_autoencoder_model,
                        check_dataset=_check_flat_unit_interval,
                        train_inputs=lambda rng, x: _as_float(x), eval_inputs=_as_float,
                        targets=lambda x, y: _as_float(x), loss=sigmoid_cross_entropy,
                        register_loss=_register_sigmoid,
                        metrics=("squared_error", "bce_per_pixel"),
                        resolve_config=_resolve_autoencoder),
    "char_lm": Task(name="char_lm", make_model=_char_lm_model, check_dataset=_check_token_rows,
                    train_inputs=lambda rng, x: x[:, :-1], eval_inputs=lambda x: x[:, :-1],
                    targets=lambda x, y: x[:, 1:], loss=next_token_cross_entropy,
                    register_loss=_register_next_token, metrics=("bits_per_char",),
                    resolve_config=_resolve_char_lm,
                    dimension_numbers=_char_lm_dimension_numbers),
}


def get_task(name: str) -> Task:
  """The task registered as ``name``; ValueError listing the known ones otherwise."""
  if name not in TASKS:
    raise ValueError(f"config.task={name!r} is not a known task; known: {sorted(TASKS)}")
  return TASKS[name]


def apply_model(model: nn.Module, params, model_state, inputs, *, train: bool):
  """``(outputs, new_model_state)``; the ``model_state`` collections (batch_stats) update in training."""
  variables = {"params": params, **model_state}
  if train and model_state:
    outputs, new_state = model.apply(variables, inputs, train=True, mutable=list(model_state))
    return outputs, dict(new_state)
  return model.apply(variables, inputs, train=train), model_state


def init_model(model: nn.Module, rng, inputs):
  """``(params, model_state)`` of the model for example ``inputs``; model_state is a dict."""
  variables = dict(model.init(rng, inputs, train=False))
  params = variables.pop("params")
  return params, variables


def make_loss_fn(task: Task, model: nn.Module):
  """The optimizers' ``loss_fn(params, model_state, rng, batch) -> (loss, (model_state, aux))``.

  ``batch`` is ``{"inputs": ..., "targets": ...}`` (already augmented); the loss
  is the batch mean of the per-example loss; ``aux`` holds the batch means of
  the task's metrics. The loss is registered with kfac-jax (harmless otherwise).
  """

  def loss_fn(params, model_state, rng, batch):
    del rng  # no dropout in these models; augmentation happened when the batch was made
    outputs, model_state = apply_model(model, params, model_state, batch["inputs"], train=True)
    per_example, metrics = task.loss(outputs, batch["targets"])
    task.register_loss(outputs, batch["targets"])
    return jnp.mean(per_example), (model_state, {k: jnp.mean(v) for k, v in metrics.items()})

  return loss_fn


def make_eval_fn(task: Task, model: nn.Module):
  """``eval_fn(params, model_state, x, y, mask) -> {"loss": sum, metric: sum, "count": n}`` over one batch.

  ``mask`` [B] is 1 for real examples and 0 for the padding of the last batch.
  """

  def eval_fn(params, model_state, x, y, mask):
    outputs, _ = apply_model(model, params, model_state, task.eval_inputs(x), train=False)
    per_example, metrics = task.loss(outputs, task.targets(x, y))
    sums = {"loss": jnp.sum(per_example * mask)}
    sums.update({k: jnp.sum(v * mask) for k, v in metrics.items()})
    sums["count"] = jnp.sum(mask)
    return sums

  return eval_fn
