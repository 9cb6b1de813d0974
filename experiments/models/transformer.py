"""A small decoder-only transformer (GPT-style) for character-level language modelling.

``tokens [B, T] -> logits [B, T, vocab]``:

  x = token_embed(tokens) + position_embed(0 .. T-1)
  for each of num_layers blocks (pre-LayerNorm, no dropout):
    x = x + attn(ln_attn(x))                     # stock nn.MultiHeadDotProductAttention, causal
    x = x + mlp_out(gelu(mlp_in(ln_mlp(x))))     # Dense(4 d) -> gelu -> Dense(d)
  logits = head(ln_final(x))                     # untied output layer

Both embeddings are ``nn.Embed`` (their leaves are named ``embedding``), initialised N(0, 0.02^2)
as in GPT-2; the other layers keep flax's defaults. With ``d_model=128``, 4 heads, 2 layers,
context 64 and the Shakespeare vocabulary of 77 characters: 424,781 parameters.

``scan=True`` is the same model with the blocks under ``nn.scan`` (parameters stacked on a
leading layer axis, ``params["blocks"][...]``, instead of ``params["block_0"]``,
``params["block_1"]``, ...): the same function of the same numbers
(:func:`stack_blocks` maps the one layout to the other). A stacked leaf's axes are declared by
:func:`dimension_numbers` (layer axis 0, each layer by the default rule), so that MBAG cuts it
into exactly the blocks of the unstacked layers.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import mbag

EMBED_INIT_STD = 0.02
SCANNED_BLOCKS = "blocks"


class Block(nn.Module):
  """One pre-LayerNorm transformer block; ``(x, mask) -> (x, None)`` so that ``nn.scan`` can
  carry ``x``.

  Attributes:
    d_model: the width of the residual stream.
    num_heads: attention heads (``d_model`` must be a multiple).
    mlp_ratio: the MLP's hidden width is ``mlp_ratio * d_model``.
  """

  d_model: int
  num_heads: int
  mlp_ratio: int = 4

  @nn.compact
  def __call__(self, x, mask):
    h = nn.LayerNorm(name="ln_attn")(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, name="attn")(h, mask=mask)
    h = nn.LayerNorm(name="ln_mlp")(x)
    h = nn.gelu(nn.Dense(self.mlp_ratio * self.d_model, name="mlp_in")(h))
    return x + nn.Dense(self.d_model, name="mlp_out")(h), None


class CharTransformer(nn.Module):
  """The decoder-only transformer of the module docstring.

  Attributes:
    vocab_size: the number of tokens (characters).
    context: the longest sequence (the position table's size).
    d_model, num_heads, num_layers, mlp_ratio: the sizes.
    scan: stack the blocks' parameters with ``nn.scan`` (the same function).
  """

  vocab_size: int
  context: int
  d_model: int = 128
  num_heads: int = 4
  num_layers: int = 2
  mlp_ratio: int = 4
  scan: bool = False

  @nn.compact
  def __call__(self, tokens, train: bool = False):
    """Logits ``[B, T, vocab_size]`` of int tokens ``[B, T]`` (``T <= context``); position t
    sees tokens 0 .. t only."""
    del train  # no dropout, no batch statistics
    length = tokens.shape[-1]
    if length > self.context:
      raise ValueError(f"sequences of {length} tokens are longer than the model's context "
                       f"{self.context}")
    embed_init = nn.initializers.normal(EMBED_INIT_STD)
    x = nn.Embed(self.vocab_size, self.d_model, embedding_init=embed_init,
                 name="token_embed")(tokens)
    x = x + nn.Embed(self.context, self.d_model, embedding_init=embed_init,
                     name="position_embed")(jnp.arange(length))
    mask = nn.make_causal_mask(tokens)
    block = dict(d_model=self.d_model, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio)
    if self.scan:
      blocks = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                       in_axes=nn.broadcast, length=self.num_layers)
      x, _ = blocks(**block, name=SCANNED_BLOCKS)(x, mask)
    else:
      for i in range(self.num_layers):
        x, _ = Block(**block, name=f"block_{i}")(x, mask)
    x = nn.LayerNorm(name="ln_final")(x)
    return nn.Dense(self.vocab_size, name="head")(x)


def dimension_numbers(scan: bool) -> Any:
  """What the model declares to MBAG about its parameters' axes: for the scanned model, layer
  axis 0 of every leaf under ``blocks/`` (each layer then by the default rule, the attention
  kernels by the ``attention`` rule); None (the defaults) for the unstacked model."""
  if not scan:
    return None
  return mbag.dimension_numbers_by_path(
      [(f"^{SCANNED_BLOCKS}/", mbag.BlockDimensionNumbers(batch_axis=0))])


def stack_blocks(params: Any, num_layers: int) -> Any:
  """The unstacked model's parameters in the scanned model's layout (``block_i`` -> layer i of
  ``blocks``)."""
  layers = [params[f"block_{i}"] for i in range(num_layers)]
  rest = {k: v for k, v in params.items() if not k.startswith("block_")}
  return {**rest, SCANNED_BLOCKS: jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}


def unstack_blocks(params: Any, num_layers: int) -> Any:
  """The inverse of :func:`stack_blocks`."""
  rest = {k: v for k, v in params.items() if k != SCANNED_BLOCKS}
  return {**rest, **{f"block_{i}": jax.tree.map(lambda x, i=i: x[i], params[SCANNED_BLOCKS])
                     for i in range(num_layers)}}
