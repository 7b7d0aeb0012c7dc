"""``sddpx-tp prune``: a model and a folder of reference images in, a run folder out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import torch
from zennit.composites import COMPOSITES

from sddpx_tp.cli.flags import echo_warning, floats
from sddpx_tp.data.references import DEFAULT_MAX_PIXELS
from sddpx_tp.lrp.relevance import RelevanceConfig
from sddpx_tp.pruning.config import PruneConfig
from sddpx_tp.pruning.config_groups import COMPENSATIONS, COSTS, DEFAULT_MIN_STEP, HEAD_JUDGES, HEADS
from sddpx_tp.pruning.criteria import CRITERIA, names_code
from sddpx_tp.pruning.method_registry import available_methods
from sddpx_tp.pruning.training import OPTIMIZERS, TrainingConfig
from sddpx_tp.run.settings import ImageFolders, ModelSource, Preprocessing, RunSettings
from sddpx_tp.run.workflow import prune_run


class _MethodChoice(click.Choice):
    """The registered methods at the time the command line is parsed (a plug-in may add one)."""

    def __init__(self) -> None:
        super().__init__([])

    @property  # type: ignore[override]
    def choices(self) -> list[str]:
        return available_methods()

    @choices.setter
    def choices(self, value: object) -> None:
        pass


# The command line's defaults are the recommended configuration's (a test holds them equal).
RECOMMENDED = PruneConfig.recommended()
DEFAULTS = RECOMMENDED.flat()  # by flat name, the command line's vocabulary
RELEVANCE, RETRAINING = RECOMMENDED.relevance, RECOMMENDED.retraining


class _CriterionChoice(click.ParamType):
    """A built-in criterion's name, or ``module:attribute`` naming a torch-pruning Importance (imported when
    the run starts, where an unimportable one is refused)."""

    name = "criterion"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value in CRITERIA or names_code(value):
            return str(value)
        self.fail(f"{value!r} is none of {', '.join(CRITERIA)}, nor module:attribute naming a torch-pruning "
                  "Importance", param, ctx)  # fmt: skip

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(CRITERIA) + "|MODULE:ATTRIBUTE]"


def config_from_options(options: dict[str, Any]) -> PruneConfig:
    """The pruning configuration the options describe."""
    return PruneConfig.recommended(
        method=options["method"],
        max_rate=options["max_rate"],
        step=options["step"],
        order_change=options["order_change"],
        rate_change=options["rate_change"],
        max_excluded=options["k"],
        min_step=options["min_step"],
        round_to=options["round_to"],
        compensation=options["compensate"],
        criterion=options["criterion"],
        cost=options["cost"],
        repair=() if options["repair"] == "none" else tuple(part.strip() for part in options["repair"].split(",")),
        ridge=options["ridge"],
        class_floor=options["class_floor"],
        patience=options["patience"],
        hold=options["hold"],
        seed=options["seed"],
        head=options["head"],
        head_folds=options["head_folds"],
        refit_head=options["refit_head"],
        head_judge=options["head_judge"],
        # Naming a target (or asking for the default one) makes the run stop at it.
        target_accuracy=DEFAULTS["target_accuracy"]
        if options["target_accuracy"] is None
        else options["target_accuracy"],
        min_class_accuracy=DEFAULTS["min_class_accuracy"]
        if options["min_class_accuracy"] is None
        else options["min_class_accuracy"],
        target_confidence=options["target_confidence"],
        target_margin=options["target_margin"],
        target_macs=options["target_macs"],
        target_speedup=options["target_speedup"],
        blocks=options["blocks"],
        block_floor=options["block_floor"],
        stop_at_target=options["stop_at_target"]
        or options["target_accuracy"] is not None
        or options["min_class_accuracy"] is not None,
        holdout=options["holdout"],
        relevance=RelevanceConfig(
            composite=options["composite"],
            aggregation=options["aggregation"],
            normalize=options["normalize"],
            start=options["start"],
            chunk_size=options["chunk_size"],
        ),
        retraining=TrainingConfig(
            epochs=options["epochs"],
            finetune_epochs=options["finetune_epochs"],
            lr=options["lr"],
            batch_size=options["batch_size"],
            optimizer=options["optimizer"],
        ),
    )


def settings_from_options(options: dict[str, Any]) -> RunSettings:
    """The run's settings as the options describe them (nothing is read yet)."""

    def text(key: str) -> str | None:
        return None if options[key] is None else str(options[key])

    chosen = options["class_folders"]
    return RunSettings(
        model=ModelSource(options["model_name"], text("weights"), options["num_classes"], options["random_init"]),
        images=ImageFolders(
            references=str(options["refs_dir"]),
            evaluation=text("eval_dir"),
            training=text("train_dir"),
            class_folders=tuple(name.strip() for name in chosen.split(",")) if chosen else None,
            per_class=options["per_class"],
            strict=options["strict"],
            labels=text("labels"),
            max_pixels=options["max_pixels"],
        ),
        config=config_from_options(options),
        preprocessing=Preprocessing(
            input_size=options["input_size"],
            resize_size=options["resize_size"],
            mean=floats(options["mean"], "--mean"),
            std=floats(options["std"], "--std"),
        ),
        keep_models=options["keep_models"],
    )


@click.command("prune")
@click.option(
    "--model",
    "model_name",
    required=True,
    help="a torchvision classifier name (e.g. resnet18), efficientnet-lite0 to lite2, timm:NAME (with timm "
    "installed), or a model file",
)
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="state_dict file for --model")
@click.option("--num-classes", type=click.IntRange(min=2), help="outputs of a checkpoint that is not 1000-way")
@click.option("--random-init", is_flag=True, help="no weights: structure-only experiments")
@click.option("--refs", "refs_dir", required=True, type=click.Path(path_type=Path), help="ImageFolder: refs/<class>/*")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="class names file")
@click.option("--classes", "class_folders", help="comma-separated class folders to use (default: all)")
@click.option("--per-class", type=click.IntRange(min=1), help="at most this many reference images per class")
@click.option("--eval", "eval_dir", type=click.Path(path_type=Path), help="held-out images, same layout")
@click.option(
    "--max-pixels",
    type=int,
    default=DEFAULT_MAX_PIXELS,
    help="refuse images larger than this, as stored or after the resize (decompression bombs)",
)
@click.option("--input-size", type=click.IntRange(min=8), help="crop size (default: the model's)")
@click.option("--resize-size", type=click.IntRange(min=8), help="resize before the crop")
@click.option("--mean", help="normalisation mean: one value or three")
@click.option("--std", help="normalisation std: one value or three")
@click.option("--out", type=click.Path(path_type=Path), default=Path("sddpx-run"), help="run directory")
@click.option("--force", is_flag=True, help="replace an existing run directory")
@click.option("--resume", is_flag=True, help="continue the interrupted run in --out")
@click.option("--method", type=_MethodChoice(), default=DEFAULTS["method"])
@click.option("--max-rate", type=float, default=DEFAULTS["max_rate"], help="stop at this filter rate, in (0, 1)")
@click.option("--step", type=float, default=DEFAULTS["step"], help="filters removed per step, fraction of the original")
@click.option(
    "--k", type=int, default=DEFAULTS["max_excluded"], help="SD-DPX: candidates a step may skip (change of order)"
)
@click.option(
    "--min-step", type=float, help=f"SD-DPX: smallest step (change of rate) [{DEFAULT_MIN_STEP}, or --step if smaller]"
)
@click.option(
    "--round-to",
    type=click.IntRange(min=1),
    default=DEFAULTS["round_to"],
    help="keep conv widths multiples of N (1: the papers)",
)
@click.option(
    "--compensate",
    type=click.Choice(COMPENSATIONS),
    default=DEFAULTS["compensation"],
    help="fold removed channels' mean into their consumers; adaptive: SD-DPX tries each step both ways; "
    "auto: none with --repair lstsq (it fits the intercepts), else adaptive for SD-DPX, none for the others",
)
@click.option(
    "--repair",
    default=",".join(DEFAULTS["repair"]) or "none",
    help="repairs without training, comma-separated: lstsq (refit the consumers of removed channels towards the "
    "unpruned outputs), bn (recalibrate BatchNorms), bias (classifier bias); none keeps the weights",
)
@click.option(
    "--ridge", type=float, default=DEFAULTS["ridge"], help="--repair lstsq: ridge towards the current weights"
)
@click.option(
    "--criterion",
    type=_CriterionChoice(),
    default=DEFAULTS["criterion"],
    help="what ranks the channels: LRP relevance (lrp), a baseline (random; torch-pruning's magnitude, bn-scale, "
    "taylor), or your own torch-pruning Importance as module:attribute (imported from PYTHONPATH: an instance, or "
    "a class built without arguments)",
)
@click.option(
    "--cost",
    type=click.Choice(COSTS),
    default=DEFAULTS["cost"],
    show_default=True,
    help="what --step and --max-rate are shares of, and what channels are ranked per unit of: filters (the "
    "papers), macs at the input size (relevance per multiply-accumulate: the cheap channels no longer go first), or "
    "latency predicted by a per-layer table timed on ONNX Runtime CPU at this run's threads (measured once, about "
    "a minute, and cached in $SDDPX_CACHE/latency)",
)
@click.option(
    "--class-floor",
    type=float,
    default=DEFAULTS["class_floor"],
    help="SD-DPX: each class keeps this share of its accuracy",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=DEFAULTS["patience"],
    help="SD-DPX: fruitless skips before halving",
)
@click.option("--train", "train_dir", type=click.Path(path_type=Path), help="training images, like --refs")
@click.option("--epochs", type=click.IntRange(min=1), default=RETRAINING.epochs, help="progressive: epochs per layer")
@click.option(
    "--finetune-epochs",
    type=click.IntRange(min=0),
    default=RETRAINING.finetune_epochs,
    help="px/dpx/sd-dpx: fine-tune afterwards",
)
@click.option("--lr", type=float, default=RETRAINING.lr, help="retraining learning rate")
@click.option("--batch-size", type=click.IntRange(min=1), default=RETRAINING.batch_size, help="retraining batch size")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=RETRAINING.optimizer, help="retraining optimizer")
@click.option("--hold", type=float, help="progressive: stop a layer short when reference H falls by more than this")
@click.option("--order-change/--no-order-change", default=DEFAULTS["order_change"], help="SD-DPX ablation switch")
@click.option("--rate-change/--no-rate-change", default=DEFAULTS["rate_change"], help="SD-DPX ablation switch")
@click.option("--composite", type=click.Choice(sorted(COMPOSITES)), default=RELEVANCE.composite)
@click.option("--aggregation", type=click.Choice(["dpx", "px"]), default=RELEVANCE.aggregation)
@click.option("--normalize/--no-normalize", default=RELEVANCE.normalize, help="per-layer L1 normalisation of relevance")
@click.option("--start", type=click.Choice(["one_hot", "one_hot_logit"]), default=RELEVANCE.start)
@click.option(
    "--chunk-size", type=click.IntRange(min=1), default=RELEVANCE.chunk_size, help="images per relevance pass"
)
@click.option(
    "--head",
    type=click.Choice(HEADS),
    default=DEFAULTS["head"],
    help="keep: class folders are outputs of the model; fit: they are your own classes, and a new linear head "
    "is fitted on the frozen backbone's features (trials judged as --head-judge says)",
)
@click.option(
    "--head-folds", type=int, default=DEFAULTS["head_folds"], help="--head fit: folds of its cross-validation"
)
@click.option(
    "--refit-head/--no-refit-head",
    default=DEFAULTS["refit_head"],
    help="--head fit: refit the head on the pruned backbone after every accepted step",
)
@click.option(
    "--head-judge",
    type=click.Choice(HEAD_JUDGES),
    default=DEFAULTS["head_judge"],
    help="--head fit: judge trials by heads cross-fitted on every reference, or by the model's own head on "
    "references held back from its fit (--holdout of each class)",
)
@click.option(
    "--target-accuracy",
    type=float,
    help=f"the recommended step keeps this share of the unpruned mean accuracy [{DEFAULTS['target_accuracy']}]; "
    "giving it also stops the run at the first step below it",
)
@click.option(
    "--min-class-accuracy",
    type=float,
    help=f"... and each class this share of its own [{DEFAULTS['min_class_accuracy']}]; giving it also stops the run",
)
@click.option(
    "--target-confidence",
    type=float,
    default=DEFAULTS["target_confidence"],
    show_default=True,
    help="a step falls short of the target only beyond this many standard errors of the judging images' "
    "sampling noise (0: any shortfall, the first miss ends the search)",
)
@click.option(
    "--target-margin",
    type=float,
    default=DEFAULTS["target_margin"],
    show_default=True,
    help="the recommended step meets the target by this many standard errors of that noise, so that a step kept "
    "only by the luck of the draw is less often handed out",
)
@click.option(
    "--target-macs",
    type=float,
    help="a speed budget: stop at the first step whose MACs are at most this share of the unpruned model's "
    "(0.25: 4x fewer); the report says whether the budget or the accuracy target ended the run",
)
@click.option(
    "--blocks/--no-blocks",
    default=DEFAULTS["blocks"],
    help="first remove whole residual blocks (their shortcuts stay) while the references keep --block-floor of "
    "the unpruned accuracy H, then prune channels",
)
@click.option(
    "--block-floor",
    type=float,
    default=DEFAULTS["block_floor"],
    help="--blocks: the share of the unpruned reference H a block's removal must keep",
)
@click.option(
    "--target-speedup",
    type=float,
    help="a measured speed budget: stop at the first step at least this many times faster than the unpruned "
    "model (ONNX Runtime CPU, batch 1, --threads; each accepted step is exported and timed)",
)
@click.option(
    "--stop-at-target",
    is_flag=True,
    help="stop once 3 steps in a row fall short of the (default) target, or a class collapses",
)
@click.option(
    "--holdout",
    type=float,
    default=DEFAULTS["holdout"],
    show_default="1/3",
    help="stopping without --eval, or --head-judge held-back: share of each class's references held back to judge",
)
@click.option("--seed", type=int, default=DEFAULTS["seed"])
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")
@click.option("--threads", type=click.IntRange(min=1, max=1024), help="torch CPU threads (default: torch's)")
@click.option("--strict", is_flag=True, help="unreadable images are errors instead of skipped")
@click.option("--keep-models", is_flag=True, help="also save every accepted step's model in RUN/steps/")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document with the summary on stdout")
def prune_command(**options: Any) -> None:
    """Prune a pretrained model for the classes of a reference folder (without fine-tuning unless --train)."""
    if options["threads"]:
        torch.set_num_threads(options["threads"])
    settings = settings_from_options(options)
    summary = prune_run(settings, options["out"], force=options["force"], resume=options["resume"],
                        device=options["device"], warn=echo_warning)  # fmt: skip
    if options["as_json"]:
        click.echo(json.dumps(summary))
    else:
        print_summary(summary)


def print_summary(summary: dict[str, Any]) -> None:
    before, after = summary["reference_harmonic_mean"]
    click.echo(
        f"pruned {summary['method']} to filter rate {summary['filter_rate']:.3f} in {summary['seconds']:.0f} s: "
        f"params x{summary['params_ratio']:.3f}, MACs x{summary['macs_ratio']:.3f}"
    )
    click.echo(f"reference accuracy (harmonic mean) {before:.3f} -> {after:.3f}")
    if summary["eval_harmonic_mean"][0] is not None:
        eval_before, eval_after = summary["eval_harmonic_mean"]
        click.echo(f"held-out accuracy (harmonic mean) {eval_before:.3f} -> {eval_after:.3f}")
    click.echo(f"model: {summary['model_file']}; report: {summary['run']}/report.md")
