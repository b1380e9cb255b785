"""The plan's cost law: a model's measured prefill and decode rates fitted against the context, so that a
cell never measured (256k, 512k, 1m) is priced from the contexts that were.

Why a law and not the nearest measured rate: what grows with the context differs by layer. An attention
layer's prefill reads every earlier token for each token (a term in n²) and its decode reads the whole
KV cache for each new token (a term in n); a Mamba layer carries a state of fixed size, so its prefill is
linear and its decode per token constant. A rate measured at 128k held constant to 1m drops the
quadratic term exactly where it dominates.

The laws, n the prompt's tokens (the context), fitted by least squares with non-negative coefficients:

- prefill seconds: ``a + b·n + c·n²`` for a model with attention layers (hybrids included), ``a + b·n``
  for one with none;
- decode seconds per token: ``d + e·n`` with attention layers, ``d`` (the points' mean) with none.

A point is (context, context / the prefill tokens/s measured there) and (context, 1 / the decode
tokens/s), one per context (``progress.rate_points``). Fewer points than a law has terms give a simpler
law, and the plan says which: attention prefill on 2 points ``b·n + c·n²`` (no constant), on 1 point
``b·n`` (its rate held constant: the quadratic term unknown); SSM prefill on 1 point ``b·n``; attention
decode on 1 point ``d``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config.contexts import ctx_label
from ..config.specs import ModelSpec
from .progress import Rates

_POWER = {0: "", 1: "·n", 2: "·n²"}


def nnls(xs: Sequence[float], ys: Sequence[float], powers: Sequence[int]) -> tuple[float, ...]:
    """Least squares of ``ys`` on ``x**p`` for each power, every coefficient ``>= 0``.

    Exact for the few terms a law has: every subset of the terms is solved unconstrained and the feasible
    one of least residual kept (the optimum's free terms are such a solution). x is scaled to at most 1
    first, since n² at 1m is 1e12 and would swamp the constant in the solve."""
    import numpy as np

    scale = max(xs)
    design = np.array([[(x / scale) ** p for p in powers] for x in xs], dtype=float)
    target = np.array(ys, dtype=float)
    best: tuple[float, np.ndarray] | None = None
    tolerance = 1e-12 * float(target @ target)
    for mask in sorted(itertools.product((False, True), repeat=len(powers)), key=sum):  # fewest terms first
        coef = np.zeros(len(powers))
        cols = [i for i, on in enumerate(mask) if on]
        if cols:
            solved = np.linalg.lstsq(design[:, cols], target, rcond=None)[0]
            if (solved < 0).any():
                continue
            coef[cols] = solved
        residual = float(((design @ coef - target) ** 2).sum())
        if best is None or residual < best[0] - tolerance:
            best = (residual, coef)
    assert best is not None  # the empty subset is always feasible
    return tuple(float(c) / scale ** p for c, p in zip(best[1], powers, strict=True))


@dataclass(frozen=True)
class Law:
    """Seconds as a sum of ``coef · n**power``, with the points it was fitted on."""

    unit: str  # "s" (prefill of n tokens) or "s/token" (decode at context n)
    powers: tuple[int, ...]
    coef: tuple[float, ...]
    points: tuple[tuple[int, float], ...]  # (context, seconds)
    fallback: str = ""  # why the law has fewer terms than the model's layers call for

    def __call__(self, n: int) -> float:
        return sum(c * n ** p for c, p in zip(self.coef, self.powers, strict=True))

    def formula(self) -> str:
        """``0.012 + 3.1e-05·n + 6.2e-11·n²``: each term with its fitted coefficient."""
        return " + ".join(f"{c:.3g}{_POWER[p]}" for c, p in zip(self.coef, self.powers, strict=True))

    def fitted_on(self) -> str:
        return ", ".join(f"{ctx_label(n)} {s:.3g} {self.unit}" for n, s in self.points)


def fit(points: Mapping[int, float], attention: bool, phase: str) -> Law | None:
    """The ``phase`` law ("prefill" or "decode") of a model with or without attention layers, on as many
    terms as the points allow (the module's docstring lists the simpler laws); None without points."""
    if not points:
        return None
    full = {("prefill", True): (0, 1, 2), ("prefill", False): (0, 1), ("decode", True): (0, 1),
            ("decode", False): (0,)}[phase, attention]
    fallbacks = {("prefill", True, 2): ((1, 2), "2 points: no constant term"),
                 ("prefill", True, 1): ((1,), "1 point: its rate held constant, the quadratic term unknown"),
                 ("prefill", False, 1): ((1,), "1 point: its rate held constant"),
                 ("decode", True, 1): ((0,), "1 point: constant per token, the KV cache's term unknown")}
    powers, why = fallbacks.get((phase, attention, len(points)), (full, ""))
    pairs = tuple(sorted(points.items()))
    coef = nnls([n for n, _ in pairs], [s for _, s in pairs], powers)
    return Law("s" if phase == "prefill" else "s/token", powers, coef, pairs, why)


@dataclass(frozen=True)
class ModelCost:
    """A model's price per item at any context: its own rates where measured, else its laws."""

    measured: Mapping[int, Rates]
    attention: bool
    layers_from: str  # "config" or "spec family <family>"
    prefill: Law
    decode: Law | None

    def item(self, ctx: int, new_tokens: int) -> tuple[float, str] | None:
        """(seconds of one item at ``ctx`` with ``new_tokens`` generated, how it was priced: ``measured``,
        ``fit`` inside the measured contexts or ``fit past the measured <largest>``); None when it decodes
        and no decode rate was ever measured."""
        point = self.measured.get(ctx)
        seconds = ctx / point.prefill_tok_s if point else self.prefill(ctx)
        decode_measured = not new_tokens or bool(point and point.decode_tok_s)
        if new_tokens:
            if point and point.decode_tok_s:
                seconds += new_tokens / point.decode_tok_s
            elif self.decode is not None:
                seconds += new_tokens * self.decode(ctx)
            else:
                return None
        if point and decode_measured:
            return seconds, "measured"
        largest = max(self.measured)
        return seconds, "fit" if ctx <= largest else f"fit past the measured {ctx_label(largest)}"

    def law_lines(self) -> list[str]:
        """One line per phase: the law with its coefficients, and the points it was fitted on."""
        layers = f"{'attention layers' if self.attention else 'no attention layers'} ({self.layers_from})"
        out = []
        for phase, law in (("prefill", self.prefill), ("decode", self.decode)):
            if law is not None:
                why = f"; {law.fallback}" if law.fallback else ""
                out.append(f"{phase} {law.unit} = {law.formula()} [{layers}{why}], fitted on {law.fitted_on()}")
        return out


def model_cost(measured: Mapping[int, Rates], attention: bool, layers_from: str) -> ModelCost | None:
    """The laws on a model's measured points; None when none was measured."""
    prefill = fit({ctx: ctx / r.prefill_tok_s for ctx, r in measured.items()}, attention, "prefill")
    if prefill is None:
        return None
    decode = fit({ctx: 1 / r.decode_tok_s for ctx, r in measured.items() if r.decode_tok_s}, attention, "decode")
    return ModelCost(measured, attention, layers_from, prefill, decode)


def has_attention(spec: ModelSpec, allow_remote_code: bool = False) -> tuple[bool, str]:
    """Whether ``spec``'s model has attention layers (a hybrid's included), and where that was read: its
    config, as the memory preflight reads it (a built-in's recipe, a local folder or the hub cache), else,
    where none is on disk or readable, the spec's family."""
    from ..engines.memory import checkpoint_layer_kinds, layer_kinds, local_folder

    kinds: list[str] | None = None
    try:
        if spec.is_builtin_tiny:
            from ..models.tiny import recipe_config

            config = recipe_config(spec.source.removeprefix("builtin:"))
            kinds = layer_kinds(config) if config is not None else None
        else:
            folder = local_folder(spec.source, spec.revision)
            trust = spec.trust_remote_code and allow_remote_code
            kinds = checkpoint_layer_kinds(folder, trust) if folder is not None else None
    except Exception:  # noqa: BLE001 - a config this reader does not know: the family still says it
        kinds = None
    if kinds:
        return any(k in ("attention", "hybrid") for k in kinds), "config"
    return spec.family != "ssm", f"spec family {spec.family}"
