"""Progressive retraining (Osaku et al.): simplify one layer at a time, then retrain up to it.

Layers are the prunable groups (a conv with everything coupled to it; in a ResNet a
whole residual stream), in network order. For each: one relevance pass ranks its
channels, and the lowest are removed, up to ``max_rate`` of its channels (optionally
stopping short when reference H falls more than ``hold`` below its value before the
layer); then the parameters from the last layer reading those channels back to the
input are retrained on the training images while every later layer stays frozen.
Both models, pruned and retrained, are recorded, so the trajectory shows what each
layer cost and what retraining gave back.

It uses the engine's relevance, candidates, masked trials and physical removal, so
``round_to``, ``min_channels`` and ``compensate`` mean here what they mean for SD-DPX.
"""

from __future__ import annotations

from sddpx_tp.metrics import harmonic_mean
from sddpx_tp.pruning.compensation import input_channel_means
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.method_registry import compensation_for, register_method
from sddpx_tp.pruning.session import PruningSession
from sddpx_tp.pruning.training import modules_up_to, train


@register_method("progressive", needs_training=True, retrains=True)
def run_progressive(session: PruningSession, config: PruneConfig) -> None:
    if session.training is None:
        raise ValueError("progressive retraining needs training images")
    state = session.schedule_state
    if "progressive_layers" not in state:
        order = [name for name, _ in session.current.model.named_modules()]
        state["progressive_layers"] = sorted(session.current.groups(), key=order.index)
        state["progressive_next"], state["progressive_phase"] = 0, "prune"
    layers: list[str] = state["progressive_layers"]
    while state["progressive_next"] < len(layers):
        index = state["progressive_next"]
        layer = layers[index]
        if state["progressive_phase"] == "prune":
            state["progressive_phase"] = "retrain"  # set before accepting: the checkpoint stores it
            _prune_layer(session, config, layer)
        state["progressive_next"], state["progressive_phase"] = index + 1, "prune"
        _retrain_up_to(session, layer, seed=index)


def _prune_layer(session: PruningSession, config: PruneConfig, layer: str) -> None:
    current = session.current
    scores = session.channel_scores(current).get(layer)
    if scores is None:  # nothing left to prune in this group
        session.accept(current, attempts=0, layer=layer)
        return
    budget = round(config.max_rate * len(scores.scores)) * scores.filters_per_channel
    chosen = current.select(current.candidates({layer: scores}), budget)
    means = input_channel_means(current.model, session.references[0]) if compensation_for(config) == "always" else None
    repair = session.step_repair()
    tried: list[float] = []
    if config.progressive_max_drop is not None and chosen:
        # The largest prefix (halving) that keeps reference H within ``hold`` of the layer's start.
        floor = session.reference_harmonic_mean - config.progressive_max_drop
        count = len(chosen)
        while count > 0:
            with current.masked(chosen[:count], means, repair) as model:
                tried.append(harmonic_mean(session.evaluate_classes(model)))
            if tried[-1] >= floor:
                break
            count //= 2
        chosen = chosen[:count]
    if chosen:
        current.remove(chosen, means, repair)
    session.accept(current, attempts=max(len(tried), 1), attempt_harmonic_means=tried, layer=layer)


def _retrain_up_to(session: PruningSession, layer: str, seed: int) -> None:
    """Retrain from the last layer that reads ``layer``'s channels back to the input."""
    assert session.training is not None and session.training_config is not None
    model = session.current.model
    order = [name for name, _ in model.named_modules()]
    readers = session.current.consumers(layer) or [layer]
    last = max(readers, key=order.index)
    train(
        model,
        *session.training,
        session.training_config,
        epochs=session.training_config.epochs,
        trainable=modules_up_to(model, last),
        seed=seed,
        progress=session.progress,
        description=f"retraining up to {last}",
    )
    session.accept(session.current, attempts=0, phase="retrained", layer=layer)


def finetune(session: PruningSession, seed: int) -> None:
    """Short fine-tuning of the whole pruned model (PX/DPX/SD-DPX + ``finetune_epochs``)."""
    assert session.training is not None and session.training_config is not None
    train(
        session.current.model,
        *session.training,
        session.training_config,
        epochs=session.training_config.finetune_epochs,
        seed=seed,
        progress=session.progress,
        description="fine-tuning",
    )
    session.accept(session.current, attempts=0, phase="finetuned")
