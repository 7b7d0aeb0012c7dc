"""Least-squares reconstruction of the layers that lose input channels (ThiNet; He et al. 2017).

After a step removes channels, each dense consumer of them (a conv with ``groups == 1`` or a
linear layer) is refit on the channels it keeps, so that its outputs on the references
match the *unpruned* model's outputs of that layer: the target never drifts with the steps,
so errors do not accumulate. A conv gives one row per image and output position (its input
unfolded into patches), so a few references give thousands of rows. The fit is ridge
regularised *towards the current weights*, which keeps it well posed when rows are few
(a 1x1 feature map at the end of a 32-px ResNet gives one row per image):

    min_w ||A_K w - y||^2 + ridge * mean(diag(A_K^T A_K)) * ||w - w_0||^2

with ``A_K`` the kept input columns plus a column of ones (the intercept: the consumer's
bias, or for a bias-free conv followed by a BatchNorm, that BatchNorm's running mean).

The statistics are gathered once per step, on the model before the step, and serve every
trial of that step (so a consumer is fitted on its inputs before the step: where a layer
upstream of it is refit or loses channels in the same step, the fit matches the unpruned
outputs on those earlier inputs, not on the new ones): per consumer either the Gram matrix
``A^T A`` with ``A^T Y`` (when rows outnumber columns) or ``A`` and ``Y`` themselves (then
the fit is solved in its dual form, ``w = w_0 + A^T (A A^T + lambda I)^-1 (y - A w_0)``).
A trial restricts them to its kept columns, so a masked trial and the physical removal get the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sddpx_tp.metrics import inference_batch, inference_batches
from sddpx_tp.pruning.compensation import following_batch_norms

# Chosen on the ResNet-18 Fashion-MNIST tuning tasks (seeds 0-4): lowest-class AUC is flat from 1e-2 to
# 0.3 and falls at 1e-4 and at 1 (docs/results/repairs.md).
DEFAULT_RIDGE = 0.1


@dataclass
class _Statistics:
    """One consumer's sufficient statistics (float64); ``intercept``: the last column is the ones column."""

    gram: torch.Tensor | None  # [D, D], or None while the rows are kept instead
    cross: torch.Tensor | None  # [D, O]
    rows: torch.Tensor | None  # [R, D], with the ones column; None once the Gram matrix is kept (or before any)
    targets: torch.Tensor | None  # [R, O]
    intercept: bool


def _static_padding(module: nn.Module) -> nn.Module | None:
    """The padding layer a TF-style "same" conv applies in its own forward before convolving
    (``Conv2dStaticSamePadding`` of EfficientNet-Lite: ``F.conv2d(self.static_padding(x), ...)``)."""
    padding = getattr(module, "static_padding", None)
    return padding if isinstance(padding, nn.Module) else None


def dense_consumer(module: nn.Module) -> bool:
    """A layer whose every output reads every input channel (grouped convs lose their outputs with their inputs)."""
    if isinstance(module, nn.Conv2d):  # unfold pads with zeros, as a "zeros" conv does
        # A subclass with its own forward may transform its input first; only the known one is modelled.
        plain = type(module).forward is nn.Conv2d.forward or _static_padding(module) is not None
        return plain and module.groups == 1 and not isinstance(module.padding, str) and module.padding_mode == "zeros"
    return isinstance(module, nn.Linear)


def _design(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The consumer's input as rows: [positions, in_channels * kernel], columns ordered as its weight."""
    if isinstance(module, nn.Conv2d):
        padding = module.padding
        assert not isinstance(padding, str), "'same'/'valid' padding strings are not supported"
        static = _static_padding(module)
        inputs = static(inputs) if static is not None else inputs  # what the conv itself convolves
        if module.kernel_size == (1, 1) and module.stride == (1, 1) and padding == (0, 0) and static is None:
            return inputs.permute(0, 2, 3, 1).reshape(-1, inputs.shape[1])  # a 1x1 conv's patches are its input
        patches = F.unfold(inputs, module.kernel_size, module.dilation, padding, module.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return inputs.reshape(-1, inputs.shape[-1])


def _with_ones(rows: torch.Tensor) -> torch.Tensor:
    return torch.cat([rows, torch.ones(len(rows), 1, dtype=rows.dtype, device=rows.device)], 1)


def _outputs_as_rows(outputs: torch.Tensor) -> torch.Tensor:
    return outputs.permute(0, 2, 3, 1).reshape(-1, outputs.shape[1]) if outputs.ndim == 4 else outputs


# Rows per float32 product when accumulating Gram matrices: each block's products are exact to about
# 1e-7 of the diagonal (measured 2e-8 to 3e-7 on EfficientNet-Lite0's shapes; a test holds it below 1e-6),
# and the blocks add up in float64. 3-5x faster than float64 products over all rows, which were half of
# the least-squares statistics' time at 224 px; smaller blocks are as fast and more exact.
_BLOCK_ROWS = 2048


class Reconstruction:
    """Per-step statistics of the dense consumers of ``model`` against the unpruned ``original``.

    ``origins[name]`` lists, for each current output channel of layer ``name``, its index in
    the unpruned model (torch-pruning keeps layer names, not channel indices).
    """

    def __init__(
        self,
        model: nn.Module,
        original: nn.Module,
        origins: Mapping[str, list[int]],
        images: torch.Tensor,
        ridge: float = DEFAULT_RIDGE,
    ) -> None:
        self.ridge = ridge
        batch_norm_after = following_batch_norms(model)
        layers = {name: m for name, m in model.named_modules() if dense_consumer(m) and name in origins}
        self.intercept = {
            name: module.bias is not None or getattr(batch_norm_after.get(module), "running_mean", None) is not None
            for name, module in layers.items()
        }
        self.statistics: dict[str, _Statistics] = {}
        # A bias-free conv's intercept lives in its BatchNorm's running mean: the unpruned model's
        # mean minus the intercept (so earlier steps' intercepts are replaced, not added up).
        self.original_means: dict[str, torch.Tensor] = {}
        original_batch_norm_after = following_batch_norms(original)
        for name, module in layers.items():
            if module.bias is None and self.intercept[name]:
                running_mean = original_batch_norm_after[original.get_submodule(name)].running_mean
                assert running_mean is not None
                self.original_means[name] = running_mean[origins[name]].double().clone()
        inputs: dict[str, torch.Tensor] = {}
        targets: dict[str, torch.Tensor] = {}

        def keep(store: dict[str, torch.Tensor], name: str, index: int) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
                store[name] = args[0] if index == 0 else output

            return hook

        handles = [layers[name].register_forward_hook(keep(inputs, name, 0)) for name in layers]
        handles += [original.get_submodule(name).register_forward_hook(keep(targets, name, 1)) for name in layers]
        was_training = model.training, original.training
        model.eval(), original.eval()
        device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for batch in inference_batches(images, inference_batch(images), device):
                    model(batch), original(batch)
                    for name, module in layers.items():
                        wanted = torch.as_tensor(origins[name], dtype=torch.long, device=device)
                        self._add(
                            name, _design(module, inputs[name]), _outputs_as_rows(targets[name].index_select(1, wanted))
                        )
                    inputs.clear()
                    targets.clear()
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training[0]), original.train(was_training[1])

    def _add(self, name: str, rows: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch: ``rows`` [R, D] without the ones column, ``targets`` [R, O], in the model's dtype."""
        intercept = self.intercept[name]
        found = self.statistics.get(name)
        if found is None:
            found = self.statistics[name] = _Statistics(None, None, None, None, intercept)
        columns = rows.shape[1] + intercept
        kept = 0 if found.rows is None else len(found.rows)
        if found.gram is None and kept + len(rows) <= columns:  # fewer rows than columns: keep the rows
            design = _with_ones(rows.double()) if intercept else rows.double()
            found.rows = design if found.rows is None else torch.cat([found.rows, design])
            found.targets = targets.double() if found.targets is None else torch.cat([found.targets, targets.double()])
            return
        if found.gram is None or found.cross is None:  # from now on the Gram matrix is the smaller
            found.gram = rows.new_zeros(columns, columns, dtype=torch.float64)
            found.cross = rows.new_zeros(columns, targets.shape[1], dtype=torch.float64)
            if found.rows is not None and found.targets is not None:
                found.gram += found.rows.T @ found.rows
                found.cross += found.rows.T @ found.targets
            found.rows = found.targets = None
        inputs = rows.shape[1]
        for start in range(0, len(rows), _BLOCK_ROWS):
            block, block_targets = rows[start : start + _BLOCK_ROWS], targets[start : start + _BLOCK_ROWS]
            found.gram[:inputs, :inputs] += (block.T @ block).double()
            found.cross[:inputs] += (block.T @ block_targets).double()
        if intercept:  # the ones column's products: column sums and the row count
            sums = rows.sum(0, dtype=torch.float64)
            found.gram[:inputs, inputs] += sums
            found.gram[inputs, :inputs] += sums
            found.gram[inputs, inputs] += len(rows)
            found.cross[inputs] += targets.sum(0, dtype=torch.float64)

    @torch.no_grad()
    def apply(self, model: nn.Module, removed_inputs: Mapping[str, list[int]]) -> int:
        """Refit every dense consumer that loses input channels on the ones it keeps; returns how many.

        Only the kept columns and the intercept change; the removed columns are left for the
        caller to delete (or mask)."""
        batch_norm_after = following_batch_norms(model)
        changed = 0
        for name, removed in removed_inputs.items():
            found = self.statistics.get(name)
            if found is None or not removed:
                continue
            module = model.get_submodule(name)
            assert isinstance(module, (nn.Conv2d, nn.Linear))
            weight: torch.Tensor = module.weight
            kernel = weight[0, 0].numel() if weight.ndim == 4 else 1
            gone = set(removed)
            kept_channels = [channel for channel in range(weight.shape[1]) if channel not in gone]
            columns = [channel * kernel + offset for channel in kept_channels for offset in range(kernel)]
            flat = weight.detach().reshape(weight.shape[0], -1).clone()
            start = [flat[:, columns].T.double()]
            batch_norm = batch_norm_after.get(module)
            if found.intercept:
                start.append(self._intercept(name, module, batch_norm)[None])
                columns = [*columns, flat.shape[1]]
            solution = self._solve(found, columns, torch.cat(start))
            inputs = len(columns) - found.intercept
            flat[:, columns[:inputs]] = solution[:inputs].T.to(flat)
            weight.copy_(flat.view_as(weight))
            if found.intercept:
                if module.bias is not None:
                    module.bias.copy_(solution[-1])
                elif batch_norm is not None and batch_norm.running_mean is not None:
                    # BN(y + b) with mean mu is BN(y) with mean mu - b.
                    batch_norm.running_mean.copy_(self.original_means[name] - solution[-1])
            changed += 1
        return changed

    def _intercept(self, name: str, module: nn.Conv2d | nn.Linear, batch_norm: nn.BatchNorm2d | None) -> torch.Tensor:
        """The consumer's current intercept: its bias, or what its BatchNorm's mean has absorbed so far."""
        if module.bias is not None:
            return module.bias.detach().double()
        assert batch_norm is not None and batch_norm.running_mean is not None
        return self.original_means[name] - batch_norm.running_mean.double()

    def _solve(self, found: _Statistics, columns: list[int], start: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(columns, dtype=torch.long, device=start.device)
        if found.gram is not None and found.cross is not None:
            gram = found.gram.index_select(0, index).index_select(1, index)
            strength = self.ridge * gram.diagonal().mean().clamp_min(1e-12)
            system = gram + strength * torch.eye(len(columns), dtype=gram.dtype, device=gram.device)
            return torch.linalg.solve(system, found.cross.index_select(0, index) + strength * start)
        assert found.rows is not None and found.targets is not None
        rows = found.rows.index_select(1, index)
        strength = self.ridge * rows.pow(2).sum(0).mean().clamp_min(1e-12)
        residual = found.targets - rows @ start
        kernel = rows @ rows.T + strength * torch.eye(len(rows), dtype=rows.dtype, device=rows.device)
        return start + rows.T @ torch.linalg.solve(kernel, residual)
