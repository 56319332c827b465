"""BatchNorm folded into the neighbouring Dense layers, for deployment.

In inference a BatchNorm layer is one affine map per feature (``batchnorm.inference_affine``):

    BN(x) = s ⊙ x + t,   s = γ / √(moving_variance + ε),   t = β − moving_mean ⊙ s

so it merges into a Dense layer next to it, exactly (up to float rounding):

- **into the Dense before it**, when nothing non-linear sits between (BN before the
  activation, ``bn_before``): ``W' = W · diag(s)``, ``b' = b ⊙ s + t`` — i.e. each output
  column scaled, and ``(b − μ)·s + β`` as the bias;
- **into the Dense after it** (BN after the activation, ``bn_after``, and a BN on the model's
  input): ``W' = diag(s) · W``, ``b' = b + tᵀ W``.

The backward fold is taken where it applies, else the forward one; Flatten layers on flat
inputs and Dropout (the identity in inference) are passed over, and Dropout is dropped from
the folded model. The BN family (noisy BN, Batch Renorm, ghost BN) has BatchNorm's
inference and folds the same way. A BN with a non-linear layer on both sides, and LayerNorm
and GroupNorm (whose statistics are the row's own), stay as they are: ``FoldedModel.kept``
names them. Folding works in float64 and returns float32 parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import jax
import numpy as np

from bnlab.nn.batchnorm import BatchNorm, inference_affine
from bnlab.nn.layers import Dense, Dropout, Flatten
from bnlab.nn.model import Sequential
from bnlab.nn.norms import LayerNorm


@dataclass(frozen=True)
class FoldedModel:
    """A model with its BatchNorm layers folded (module docstring): ``model``, its
    ``params`` and ``bn_state`` (one member's, as ``Sequential.init`` shapes them), what
    was folded where (``folds``: ``(bn layer, dense layer, "backward" | "forward")`` by the
    original model's layer names) and the layers kept with why (``kept``)."""

    model: Sequential
    params: tuple[dict, ...] = field(repr=False)
    bn_state: tuple[dict, ...] = field(repr=False)
    folds: tuple[tuple[str, str, str], ...]
    kept: tuple[tuple[str, str], ...]


def fold_batchnorm(model: Sequential, params: tuple[dict, ...],
                   bn_state: tuple[dict, ...]) -> FoldedModel:
    """``model`` with its BatchNorm layers folded into the neighbouring Dense layers; the
    folded model's ``apply(..., train=False)`` equals the original's. ``params`` and
    ``bn_state`` are one member's (no seed axis)."""
    entries = [[layer, _float64(p), _float64(s), name] for layer, p, s, name in zip(
        model.layers, params, bn_state, model.layer_names, strict=True)
        if not isinstance(layer, Dropout)]
    folds, kept = [], []
    i = 0
    while i < len(entries):
        layer, layer_params, layer_state, name = entries[i]
        if not isinstance(layer, BatchNorm):
            if isinstance(layer, LayerNorm):  # GroupNorm too
                kept.append((name, "its statistics are each row's own: nothing to fold"))
            i += 1
            continue
        scale, shift = (np.asarray(a, np.float64) for a in inference_affine(
            layer_params, layer_state, layer.epsilon))
        before = _neighbour(entries, i, -1)
        after = _neighbour(entries, i, +1)
        if before is not None and entries[before][0].activation == "linear":
            dense, dense_params = entries[before][0], entries[before][1]
            bias = dense_params.get("bias", np.zeros_like(scale))
            entries[before][1] = {"kernel": dense_params["kernel"] * scale[None, :],
                                  "bias": bias * scale + shift}
            entries[before][0] = dataclasses.replace(dense, use_bias=True)
            folds.append((name, entries[before][3], "backward"))
        elif after is not None:
            dense, dense_params = entries[after][0], entries[after][1]
            kernel = dense_params["kernel"]
            bias = dense_params.get("bias", np.zeros(kernel.shape[1]))
            entries[after][1] = {"kernel": scale[:, None] * kernel, "bias": bias + shift @ kernel}
            entries[after][0] = dataclasses.replace(dense, use_bias=True)
            folds.append((name, entries[after][3], "forward"))
        else:
            kept.append((name, "a non-linear layer on both sides: no Dense to fold into"))
            i += 1
            continue
        del entries[i]
    folded = dataclasses.replace(model, layers=tuple(e[0] for e in entries))
    as_float32 = [jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), (e[1], e[2]))
                  for e in entries]
    return FoldedModel(folded, tuple(p for p, _ in as_float32), tuple(s for _, s in as_float32),
                       tuple(folds), tuple(kept))


def _neighbour(entries: list, index: int, step: int) -> int | None:
    """The Dense layer next to ``entries[index]`` in direction ``step`` with only Flatten
    layers (the identity on flat inputs) between, else ``None``."""
    j = index + step
    while 0 <= j < len(entries) and isinstance(entries[j][0], Flatten):
        j += step
    if 0 <= j < len(entries) and isinstance(entries[j][0], Dense):
        return j
    return None


def _float64(tree: dict) -> dict:
    return {name: np.asarray(value, np.float64) for name, value in tree.items()}
