"""Progressive retraining and fine-tuning (issue 7) on a small CNN trained here on real Fashion-MNIST."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sddpx_tp.pruning.progressive as progressive_module
from sddpx_tp.api import PruneResult, ResumePoint, prune
from sddpx_tp.data.fashion import class_subset, load_split, to_model_input
from sddpx_tp.metrics import per_class_accuracy
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.session import PruningSession
from sddpx_tp.pruning.training import TrainingConfig, modules_up_to


@pytest.fixture(scope="module")
def training_images() -> tuple[torch.Tensor, torch.Tensor]:
    """200 training images per class of the T-shirt/Shirt task, disjoint from the small net's own data."""
    images, labels = load_split("train")
    chosen = class_subset(images[30000:], labels[30000:], [0, 6], per_class=200, seed=3)
    return to_model_input(chosen[0], 28), chosen[1]


def _run(task: tuple, training: tuple, method: str = "progressive", training_config: TrainingConfig | None = None,
         **options: Any) -> PruneResult:  # fmt: skip
    model, references, evaluation = task
    config = PruneConfig.paper(method=method, max_rate=0.5, retraining=training_config or TrainingConfig())
    return prune(model, references, [0, 6], config, evaluation=evaluation, progress=False, training=training,
                 **options)  # fmt: skip


def test_retraining_changes_only_what_it_may_and_does_not_lose_training_accuracy(
    fashion_task: tuple, training_images: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    phases: list[dict[str, Any]] = []
    original_train = progressive_module.train

    def observed_train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        before = {key: value.clone() for key, value in model.state_dict().items()}
        accuracy_before = per_class_accuracy(model, images, labels, 2)  # labels here are class positions
        loss = original_train(model, images, labels, *args, **kwargs)
        after = model.state_dict()
        trainable = set(kwargs["trainable"])
        phases.append({
            "frozen_kept": all(
                torch.equal(before[key], after[key]) for key in before if key.rsplit(".", 1)[0] not in trainable
            ),
            "trainable_changed": any(
                not torch.equal(before[key], after[key]) for key in before if key.rsplit(".", 1)[0] in trainable
            ),
            "frozen_count": sum(1 for key in before if key.rsplit(".", 1)[0] not in trainable),
            "accuracy": (sum(accuracy_before) / 2, sum(per_class_accuracy(model, images, labels, 2)) / 2),
        })  # fmt: skip
        return loss

    monkeypatch.setattr(progressive_module, "train", observed_train)
    result = _run(fashion_task, training_images, training_config=TrainingConfig(epochs=2, lr=1e-3))
    layers = [record.layer for record in result.trajectory if record.phase == "retrained"]
    assert len(layers) == len(phases) == 3  # the small net's three conv blocks, in network order
    assert layers == ["0", "4", "8"]
    assert all(phase["frozen_kept"] and phase["trainable_changed"] for phase in phases)
    assert phases[0]["frozen_count"] > 0, "the first phase must leave later layers frozen: nothing was checked"
    for phase in phases:
        before, after = phase["accuracy"]
        assert after >= before, f"training accuracy dropped across a retraining phase: {before:.3f} -> {after:.3f}"
    assert result.trajectory[-1].filter_rate == pytest.approx(0.5, abs=0.05)


def test_modules_up_to_is_network_order() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU()), nn.Flatten())
    assert modules_up_to(model, "1.0") == ["0", "1.0"]
    with pytest.raises(ValueError, match="leaf"):
        modules_up_to(model, "1")


def test_finetuning_after_sd_dpx_is_recorded_at_the_same_rate(fashion_task: tuple, training_images: tuple) -> None:
    config = TrainingConfig(finetune_epochs=2, lr=1e-3)
    result = _run(fashion_task, training_images, method="sd-dpx", training_config=config, keep_models=True)
    pruned, finetuned = result.trajectory[-2:]
    assert (pruned.phase, finetuned.phase) == ("pruning", "finetuned")
    assert finetuned.filters == pruned.filters
    images, labels = training_images
    positions = (labels == 6).long()  # class 0 -> 0, class 6 -> 1: the restricted model's outputs
    with torch.no_grad():  # the loss it minimises, on its training images (accuracy alone is too coarse here)
        before = F.cross_entropy(result.models[-2](images), positions).item()
        after = F.cross_entropy(result.model(images), positions).item()
    assert after < before, f"fine-tuning did not lower the training loss: {before:.4f} -> {after:.4f}"


def test_interrupted_progressive_run_resumes_to_the_same_weights(fashion_task: tuple, training_images: tuple) -> None:
    uninterrupted = _run(fashion_task, training_images)
    saved: list[ResumePoint] = []

    def stop_mid_run(session: PruningSession) -> None:
        saved.append(ResumePoint(copy.deepcopy(session.current.model), list(session.trajectory),
                                 copy.deepcopy(session.schedule_state)))  # fmt: skip
        if len(session.trajectory) == 4:  # layer 2 pruned, not yet retrained
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(fashion_task, training_images, on_accept=stop_mid_run)
    assert saved[-1].trajectory[-1].phase == "pruning"
    resumed = _run(fashion_task, training_images, resume=saved[-1])
    assert [r.phase for r in resumed.trajectory] == [r.phase for r in uninterrupted.trajectory]
    state, expected = resumed.model.state_dict(), uninterrupted.model.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[key], expected[key]) for key in state)


def test_retraining_methods_need_training_images(fashion_task: tuple, training_images: tuple) -> None:
    with pytest.raises(ValueError, match="training images"):
        _run(fashion_task, None)
    with pytest.raises(ValueError, match="training images"):
        _run(fashion_task, None, method="dpx", training_config=TrainingConfig(finetune_epochs=1))
    with pytest.raises(ValueError, match="finetune_epochs"):
        _run(fashion_task, training_images, training_config=TrainingConfig(finetune_epochs=1))
    with pytest.raises(ValueError, match="lr"):
        TrainingConfig(lr=0)
