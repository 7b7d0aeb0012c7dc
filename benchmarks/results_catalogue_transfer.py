"""The generated tables of the transfer page (docs/results/transfer.md): new classes on a frozen backbone.

Entries as in :mod:`results_catalogue`, which includes them.
"""

from __future__ import annotations

from results_kinds import (
    AUC,
    AUC_LOWEST,
    KEPT_PER_TASK,
    KEPT_SEEDS,
    LOWEST_PER_TASK,
    MEDIAN_SECONDS,
    REFERENCE_SCORING_MEDIAN,
    RELEVANCE_MEDIAN,
    REST_MEDIAN,
    SECONDS_PER_TASK,
    Column,
    Renders,
    Row,
    SecondsBySeed,
    Table,
    key,
    mean,
    per_task,
    split,
    spread,
)

# Transfer rows repeated from earlier runs, whose times are not comparable with the later runs'.
NO_TIMES = (SECONDS_PER_TASK.heading,)

TRANSFER_TABLES: dict[str, Renders] = {
    "transfer": Table(
        "results/transfer.json",
        "EfficientNet-Lite0, seeds 5-9",
        (("sd-dpx", "SD-DPX (`--repair none`, the default before `lstsq`)"), ("dpx", "DPX")),
        (AUC, AUC_LOWEST, KEPT_SEEDS, MEDIAN_SECONDS, RELEVANCE_MEDIAN, REFERENCE_SCORING_MEDIAN, REST_MEDIAN),
    ),
    "transfer_lstsq": Table(
        "results/transfer.json",
        "EfficientNet-Lite0, seeds 5-9",
        (
            ("dpx", "DPX (fixed weights)"),
            ("sd-dpx", "SD-DPX (fixed weights, the default before)"),
            ("sd-dpx + lstsq (the default)", "**SD-DPX + `lstsq` (the default)**"),
        ),
        (AUC, AUC_LOWEST, KEPT_SEEDS, LOWEST_PER_TASK, SECONDS_PER_TASK),
    ),
    "transfer_timing": SecondsBySeed(
        "varied pairs, s without held-out",
        (
            ("results/transfer_timing.json", "dpx", "DPX"),
            ("results/transfer_timing.json", "sd-dpx + lstsq (the default)", "**SD-DPX + `lstsq` (the default)**"),
        ),
        ("results/transfer_timing.json", "sd-dpx + lstsq (the default)", "dpx", "default / DPX"),
    ),
    "transfer_variants": Table(
        "results/transfer.json",
        "EfficientNet-Lite0, seeds 5-9",
        (
            ("px", "PX (head refit)"),
            ("dpx, head kept", "DPX, head kept (`--no-refit-head`)"),
            ("sd-dpx, head kept", "SD-DPX, head kept"),
            Row("dpx", "DPX (head refit; first table)", blank=NO_TIMES),
            Row("sd-dpx + lstsq (the default)", "SD-DPX + `lstsq` (the default; table above)", blank=NO_TIMES),
        ),
        (AUC, AUC_LOWEST, LOWEST_PER_TASK, KEPT_SEEDS, SECONDS_PER_TASK),
    ),
    "transfer_hard_pair": Table(
        "results/transfer_hard_pair.json",
        "hard pair, seeds 5-9",
        (
            Row("dpx", "DPX (fixed weights)", blank=("SD-DPX evaluations",)),
            ("sd-dpx + lstsq (the default)", "**SD-DPX + `lstsq` (the default)**"),
        ),
        (
            AUC,
            Column("AUC lowest class (5 to 9)", per_task(key("auc_lowest_class"), 3)),
            Column("kept to (5 to 9)", per_task(key("highest_rate_kept"), 2)),
            SECONDS_PER_TASK,
            Column("relevance", per_task(split("relevance"), 0)),
            Column("references", per_task(split("references"), 0)),
            Column("SD-DPX evaluations", per_task(key("evaluations"), 0)),
        ),
    ),
    "transfer_hard_pair_timing": SecondsBySeed(
        "hard pair, seconds without held-out",
        (
            ("results/transfer_hard_pair.json", "dpx", "DPX, before (table above)"),
            ("results/transfer_hard_pair_timing.json", "dpx", "**DPX, now**"),
            ("results/transfer_hard_pair.json", "sd-dpx + lstsq (the default)", "default, before (table above)"),
            ("results/transfer_hard_pair_timing.json", "sd-dpx + lstsq (the default)", "**default, now**"),
        ),
        ("results/transfer_hard_pair_timing.json", "sd-dpx + lstsq (the default)", "dpx", "default / DPX, now"),
    ),
    "transfer_tune": Table(
        "results/transfer_tune.json",
        "variant (seed 0)",
        (
            ("dpx", "DPX, head refit after every step (the default)"),
            ("dpx, head kept", "DPX, head kept (`--no-refit-head`)"),
        ),
        (
            AUC,
            AUC_LOWEST,
            Column("kept to", mean(key("highest_rate_kept"), 2)),
            Column("s", mean(key("seconds"), 0)),
            Column("relevance", mean(split("relevance"), 0)),
            Column("reference scoring (cross-fitted)", mean(split("references"), 0)),
            Column("held-out evaluation", mean(split("held_out"), 0)),
            Column("rest", mean(split("rest"), 0)),
        ),
    ),
    "transfer_resnet": Table(
        "results/transfer_resnet.json",
        "ResNet-18 8-class source, seeds 5-9",
        (
            ("dpx", "DPX"),
            ("dpx, head kept", "DPX, head kept"),
            ("sd-dpx", "SD-DPX (`--repair none`, the default before `lstsq`)"),
            ("sd-dpx, head kept", "SD-DPX, head kept"),
            ("px", "PX"),
        ),
        (AUC, AUC_LOWEST, KEPT_PER_TASK, MEDIAN_SECONDS),
    ),
    "transfer_resnet_judge": Table(
        "results/transfer_resnet_judge.json",
        "ResNet-18 8-class source, seeds 5-9",
        (
            ("dpx + lstsq", "DPX + `lstsq`"),
            ("sd-dpx + lstsq (the default)", "**SD-DPX + `lstsq`, cross-fitted (the default)**"),
            ("sd-dpx + lstsq, held-back judge", "SD-DPX + `lstsq`, held-back judge"),
        ),
        (
            AUC,
            AUC_LOWEST,
            LOWEST_PER_TASK,
            Column("kept to (per task)", per_task(key("highest_rate_kept"), 2, every_task=True)),
            MEDIAN_SECONDS,
            REFERENCE_SCORING_MEDIAN,
            Column("SD-DPX evaluations", spread(key("evaluations"))),
        ),
    ),
}
