"""Per-filter LRP relevance of every conv of a model, on a set of reference images.

Two engines compute the same numbers:

* ``"zennit"`` registers a zennit composite and reads each conv's output relevance
  as the gradient arriving there (zennit passes relevance backwards *as* the
  gradient). Any zennit composite works; it is slow, because every rule re-runs its
  layer forward inside the backward pass and the original backward runs as well.
* ``"fast"`` (default for EpsilonPlus and EpsilonPlusFlat) builds the same rules into
  the forward pass, so that one ordinary backward gives every layer's relevance
  (:mod:`sddpx_tp.lrp.fast_relevance` says how); zennit still supplies the canonizers.

Relevance at a conv's output is summed over space per filter and aggregated over
images as DPX (sum of |R|) or PX (sum over images of |sum over space of R|).
The model is left as it was found: weights, hooks, forwards, flags.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm
from zennit.canonizers import Canonizer
from zennit.composites import COMPOSITES
from zennit.core import Composite
from zennit.rules import Pass

from sddpx_tp.lrp.architectures import ArchitectureSupport, canonizers_for, support_for
from sddpx_tp.lrp.canonizers import ConstantGate
from sddpx_tp.lrp.fast_relevance import channels_last, fast_relevance

Aggregation = Literal["dpx", "px"]
StartRelevance = Literal["one_hot", "one_hot_logit"]
Engine = Literal["auto", "fast", "zennit"]
References = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]

# Composites whose conv rule is z+ and whose dense rule is epsilon: the fast engine's rules.
FAST_COMPOSITES = ("epsilon_plus", "epsilon_plus_flat")
PROGRESS_AFTER_CHUNKS = 8  # a relevance pass over more chunks than this shows a bar (shorter ones flicker)


@dataclass(frozen=True)
class RelevanceConfig:
    """How relevance is computed and aggregated."""

    composite: str = "epsilon_plus_flat"
    aggregation: Aggregation = "dpx"
    normalize: bool = False  # per-layer L1 normalisation (DPX's --norm)
    start: StartRelevance = "one_hot"
    chunk_size: int = 16  # images per backward pass: bounds memory
    engine: Engine = "auto"

    def __post_init__(self) -> None:
        if self.composite not in COMPOSITES:
            raise ValueError(f"unknown composite {self.composite!r}; choose from {sorted(COMPOSITES)}")
        if self.aggregation not in ("dpx", "px"):
            raise ValueError(f"aggregation must be 'dpx' or 'px', not {self.aggregation!r}")
        if self.start not in ("one_hot", "one_hot_logit"):
            raise ValueError(f"start must be 'one_hot' or 'one_hot_logit', not {self.start!r}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, not {self.chunk_size}")
        if self.engine == "fast" and self.composite not in FAST_COMPOSITES:
            raise ValueError(f"the fast engine implements {FAST_COMPOSITES}; use engine='zennit' for others")

    @property
    def resolved_engine(self) -> Literal["fast", "zennit"]:
        if self.engine == "auto":
            return "fast" if self.composite in FAST_COMPOSITES else "zennit"
        return self.engine


@dataclass
class LayerRelevance:
    """Relevance at one layer's output, summed over space: one row per image, one column per channel."""

    signed: torch.Tensor  # sum over space of R
    absolute: torch.Tensor  # sum over space of |R|


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every Conv2d of ``model`` by qualified name: the filters relevance is computed for."""
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}


def filter_relevance(
    model: nn.Module,
    references: References,
    config: RelevanceConfig | None = None,
    support: ArchitectureSupport | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-filter relevance for every Conv2d: ``{name: tensor of length out_channels}``.

    ``references`` is ``(images, labels)`` or an iterable of such batches; labels are
    indices into the model's outputs and select the start relevance. ``support`` is
    the model's :func:`~sddpx_tp.lrp.architectures.support_for` record, when the caller
    has already checked it; otherwise it is looked up (and the model checked) once. ``progress``: a bar on
    stderr over the chunks of images when there are many (1,000 classes of references take minutes).
    """
    config = config or RelevanceConfig()
    support = support or support_for(model)
    gated = {name for pair in support.gates(model) for name in pair}  # constants to LRP: no relevance reaches them
    layers = {name: module for name, module in conv_layers(model).items() if name not in gated}
    per_layer = layer_relevance(model, references, layers, config, support, progress)
    scores = {}
    for name, relevance in per_layer.items():
        # DPX: sum of |R| over images and space. PX: sum over images of |sum over space of R|.
        score = relevance.absolute.sum(dim=0) if config.aggregation == "dpx" else relevance.signed.abs().sum(dim=0)
        if config.normalize:
            score = score / score.sum().clamp_min(torch.finfo(score.dtype).tiny)
        scores[name] = score
    return scores


def layer_relevance(
    model: nn.Module,
    references: References,
    layers: Mapping[str, nn.Module],
    config: RelevanceConfig | None = None,
    support: ArchitectureSupport | None = None,
    progress: bool = False,
) -> dict[str, LayerRelevance]:
    """Relevance at the output of each module in ``layers`` (convs, blocks, stages).

    ``support`` as for :func:`filter_relevance`: given, it is trusted; None, the model
    is checked once for this call, not once per batch.
    """
    config = config or RelevanceConfig()
    collected: dict[str, list[LayerRelevance]] = {name: [] for name in layers}
    device = next(model.parameters()).device
    fast = config.resolved_engine == "fast"
    with _frozen_eval(model), channels_last(model) if fast else contextlib.nullcontext():
        # Checking may fx-trace the model; canonizers are reusable (each apply registers fresh copies).
        canonizers = canonizers_for(model) if support is None else support.canonizers(model)
        chunks = _chunks(references, config.chunk_size)
        total = -(-len(references[0]) // config.chunk_size) if isinstance(references, tuple) else None
        shown = progress and (total is None or total > PROGRESS_AFTER_CHUNKS)
        for images, labels in tqdm(chunks, total=total, desc="relevance", unit="chunk", leave=False,
                                   disable=not shown, file=sys.stderr):  # fmt: skip
            images, labels = images.to(device), labels.to(device)
            if fast:
                chunk = _fast_pass(model, images, labels, layers, config, canonizers)
            else:
                chunk = _zennit_pass(model, images, labels, layers, config, canonizers)
            for name, relevance in chunk.items():
                collected[name].append(relevance)
    missing = [name for name, parts in collected.items() if not parts]
    if missing:
        raise ValueError(f"layers never ran in the forward pass: {missing[:5]}")
    return {
        name: LayerRelevance(
            signed=torch.cat([part.signed for part in parts]),
            absolute=torch.cat([part.absolute for part in parts]),
        )
        for name, parts in collected.items()
    }


def _chunks(references: References, chunk_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    batches = [references] if isinstance(references, tuple) else references
    count = 0
    for images, labels in batches:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        for start in range(0, len(images), chunk_size):
            count += 1
            yield images[start : start + chunk_size], labels[start : start + chunk_size]
    if count == 0:
        raise ValueError("no reference images given")


@contextlib.contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients (nothing needs them), restored afterwards."""
    was_training = model.training
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    model.eval()
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
        model.train(was_training)


@contextlib.contextmanager
def _canonized(model: nn.Module, canonizers: list[Canonizer]) -> Iterator[list[object]]:
    instances = [instance for canonizer in canonizers for instance in canonizer.apply(model)]
    try:
        yield instances
    finally:
        for instance in reversed(instances):
            instance.remove()


def _reduce(relevance: torch.Tensor) -> LayerRelevance:
    dims = tuple(range(2, relevance.ndim))
    return LayerRelevance(signed=relevance.sum(dim=dims).detach(), absolute=relevance.abs().sum(dim=dims).detach())


def _start_gradient(logits: torch.Tensor, labels: torch.Tensor, config: RelevanceConfig) -> torch.Tensor:
    """Start relevance at the output, as zennit's convention (the relevance itself)."""
    one_hot = torch.zeros_like(logits).scatter_(1, labels[:, None], 1.0)
    return one_hot * logits.detach() if config.start == "one_hot_logit" else one_hot


def _zennit_pass(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    layers: Mapping[str, nn.Module],
    config: RelevanceConfig,
    canonizers: list[Canonizer],
) -> dict[str, LayerRelevance]:
    # A gate's product passes its relevance whole (sddpx_tp.lrp.canonizers.ConstantGate).
    composite: Composite = COMPOSITES[config.composite](canonizers=canonizers, layer_map=[(ConstantGate, Pass())])
    results: dict[str, LayerRelevance] = {}
    handles = []

    def capture(name: str) -> Callable[..., None]:
        def forward_hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            def on_grad(grad: torch.Tensor) -> None:
                results[name] = _reduce(grad)  # zennit's gradient *is* the relevance

            output.register_hook(on_grad)

        return forward_hook

    with composite.context(model) as modified:
        # Registered inside the context so each hook sees the output of zennit's own hook.
        handles = [module.register_forward_hook(capture(name)) for name, module in layers.items()]
        try:
            inputs = images.clone().requires_grad_(True)
            logits = modified(inputs)
            torch.autograd.backward(logits, _start_gradient(logits, labels, config))
        finally:
            for handle in handles:
                handle.remove()
    return results


def _fast_pass(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    layers: Mapping[str, nn.Module],
    config: RelevanceConfig,
    canonizers: list[Canonizer],
) -> dict[str, LayerRelevance]:
    with _canonized(model, canonizers) as instances:
        merged = {getattr(instance, "batch_norm", None) for instance in instances}
        return fast_relevance(
            model,
            images,
            lambda logits: _start_gradient(logits, labels, config),
            layers,
            {module for module in merged if module is not None},
            _reduce,
        )
