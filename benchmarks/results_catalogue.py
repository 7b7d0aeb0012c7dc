"""Every generated results table, by the name a docs page marks it with (``<!-- table: NAME -->``).

Each entry names its results file(s), the rows to show (each a label in the file and the words the
page uses for it) and the columns; :mod:`results_kinds` holds the kinds of table. The machinery that
writes and checks the pages is ``results_tables.py``.
"""

from __future__ import annotations

from results_catalogue_transfer import TRANSFER_TABLES
from results_kinds import (
    AUC,
    AUC_LOWEST,
    EVALUATIONS,
    KEPT,
    METHODS,
    PASSES,
    SECONDS,
    STUDY,
    TASKS,
    VS_DPX,
    Column,
    CostComparison,
    Deploy,
    ExportSpeed,
    Renders,
    Retraining,
    Row,
    StepRules,
    Table,
    ThreadProfile,
    key,
    mean,
    per_task,
)
from results_kinds_speed import SPEED_TABLES

# The study's reference counts and classes per task: the 30-reference, 2-class runs are the main run.
STUDY_REFERENCES = (
    (5, "results/study/refs_5.json"),
    (10, "results/study/refs_10.json"),
    (30, "results/fashion_methods_round16.json"),
    (100, "results/study/refs_100.json"),
)
STUDY_CLASSES = (
    (2, "results/fashion_methods_round16.json"),
    (3, "results/study/classes_3.json"),
    (5, "results/study/classes_5.json"),
)

TABLES: dict[str, Renders] = {
    "ablation_resnet18": Table(
        "results/ablation_resnet18.json",
        "ResNet-18, task seeds 5-9",
        (
            ("dpx", "dpx"),
            ("dpx + round_to 16", "dpx, round_to 16"),
            ("sd-dpx (paper)", "sd-dpx as in the paper (K=10, single filters, trials on copies)"),
            ("sd-dpx + masked trials", "+ masked trials (same trajectory, no copies)"),
            ("sd-dpx + masked + patience 2", "+ masked trials + patience 2"),
            ("sd-dpx + compensation", "+ compensation (always)"),
            ("sd-dpx + class floor 0.9", "+ class floor 0.9"),
            ("sd-dpx + round_to 16", "+ round_to 16"),
            ("sd-dpx default (masked, round_to 16)", "masked trials + round_to 16"),
            ("sd-dpx + all", "+ compensation, class floor 0.9, patience 2 (all of the above)"),
            ("sd-dpx default + adaptive compensation", "masked trials + round_to 16 + adaptive compensation"),
            ("sd-dpx default + adaptive compensation + patience 2", "+ patience 2 (the CLI default before lstsq)"),
        ),
    ),
    "ablation_mobilenet_v2": Table(
        "results/ablation_mobilenet_v2.json",
        "MobileNetV2, task seeds 5-9",
        (
            ("dpx", "dpx"),
            ("sd-dpx (paper)", "sd-dpx as in the paper"),
            ("sd-dpx default (masked, round_to 16)", "masked trials + round_to 16"),
            ("sd-dpx + all", "+ compensation (always), class floor 0.9, patience 2"),
            ("sd-dpx default + adaptive compensation", "masked trials + round_to 16 + adaptive compensation"),
            ("sd-dpx default + adaptive compensation + patience 2", "+ patience 2 (the CLI default before lstsq)"),
        ),
    ),
    "ablation_mobilenet_v2_options": Table(
        "results/ablation_mobilenet_v2_options.json",
        "MobileNetV2, each option alone (separate run, alone on the machine, 2 threads)",
        (
            ("dpx", "dpx"),
            ("sd-dpx (paper)", "sd-dpx as in the paper"),
            ("sd-dpx + masked trials", "+ masked trials"),
            ("sd-dpx + masked + patience 2", "+ masked trials + patience 2"),
            ("sd-dpx + compensation", "+ compensation (always)"),
            ("sd-dpx + class floor 0.9", "+ class floor 0.9"),
            ("sd-dpx + round_to 16", "+ round_to 16"),
        ),
    ),
    "repairs_resnet18": Table(
        "results/repairs_resnet18.json",
        "ResNet-18, task seeds 5-9",
        (
            ("dpx", "dpx"),
            ("dpx r16", "dpx, round_to 16"),
            ("dpx r16 + lstsq", "dpx, round_to 16, `--repair lstsq --ridge 1e-3`"),
            ("dpx r16 + lstsq, ridge 0.1", "dpx, round_to 16, `--repair lstsq` (ridge 0.1)"),
            ("dpx r16 + bn", "dpx, round_to 16, `--repair bn`"),
            ("dpx r16, criterion random", "dpx, round_to 16, `--criterion random`"),
            ("dpx r16, criterion magnitude", "dpx, round_to 16, `--criterion magnitude`"),
            ("sd-dpx default", "sd-dpx, the earlier default (`--repair none`, adaptive compensation)"),
            ("sd-dpx default + lstsq", "sd-dpx, earlier default with `--repair lstsq --ridge 1e-3`"),
            ("sd-dpx, new default (lstsq, ridge 0.1)", "**sd-dpx, the CLI default** (`lstsq`, ridge 0.1)"),
        ),
    ),
    "criteria_resnet18": Table(
        "results/criteria_resnet18.json",
        "ResNet-18 (retrained), task seeds 5-9",
        (
            ("dpx", "dpx (LRP)"),
            ("dpx r16", "dpx, round_to 16 (LRP)"),
            ("dpx r16, criterion bn-scale", "dpx, round_to 16, `--criterion bn-scale`"),
            ("dpx r16, criterion taylor", "dpx, round_to 16, `--criterion taylor`"),
            ("dpx r16 + lstsq, ridge 0.1", "dpx, round_to 16, `--repair lstsq` (LRP)"),
            ("dpx r16 + lstsq, ridge 0.1, criterion taylor", "dpx, round_to 16, `--repair lstsq --criterion taylor`"),
        ),
        (AUC, AUC_LOWEST, KEPT, SECONDS, VS_DPX),
    ),
    "criteria_mobilenet_v3_small": Table(
        "results/criteria_mobilenet_v3_small.json",
        "MobileNetV3-Small (gated), task seeds 5-9",
        (
            ("dpx r16", "dpx, round_to 16 (LRP through the gates)"),
            ("dpx r16, criterion random", "dpx, round_to 16, `--criterion random`"),
            ("dpx r16, criterion taylor", "dpx, round_to 16, `--criterion taylor`"),
            ("sd-dpx, new default (lstsq, ridge 0.1)", "**sd-dpx, the CLI default** (`lstsq`, ridge 0.1)"),
        ),
        (AUC, AUC_LOWEST, KEPT, SECONDS),
    ),
    "repairs_mobilenet_v2": Table(
        "results/repairs_mobilenet_v2.json",
        "MobileNetV2, task seeds 5-9",
        (
            ("dpx", "dpx"),
            ("dpx r16", "dpx, round_to 16"),
            ("dpx r16 + lstsq, ridge 0.1", "dpx, round_to 16, `--repair lstsq`"),
            ("dpx r16, criterion random", "dpx, round_to 16, `--criterion random`"),
            ("dpx r16, criterion magnitude", "dpx, round_to 16, `--criterion magnitude`"),
            ("dpx r16 + lstsq, ridge 0.1, criterion random", "dpx, round_to 16, `--repair lstsq --criterion random`"),
            ("sd-dpx default", "sd-dpx, the earlier default (`--repair none`, adaptive compensation)"),
            ("sd-dpx, new default (lstsq, ridge 0.1)", "**sd-dpx, the CLI default** (`lstsq`, ridge 0.1)"),
        ),
        (AUC, AUC_LOWEST, KEPT, SECONDS, VS_DPX),
    ),
    "floor_plan": Table(
        "results/floor_plan_after.json",
        "ResNet-18, task seeds 5-9, after the move into subpackages",
        (("dpx", "dpx"), ("sd-dpx, new default (lstsq, ridge 0.1)", "sd-dpx, the CLI default")),
        (AUC, AUC_LOWEST, KEPT, PASSES, EVALUATIONS),
    ),
    "ablation_timing": Table(
        "results/ablation_timing.json",
        "ResNet-18, task seeds 5-9, alone",
        (
            ("dpx", "dpx"),
            ("sd-dpx default (masked, round_to 16)", "masked trials + round_to 16"),
            ("sd-dpx default + adaptive compensation", "+ adaptive compensation"),
            ("sd-dpx default + adaptive compensation + patience 2", "**+ patience 2 (the CLI default)**"),
        ),
        (Column("s (mean)", mean(key("method_seconds"), 1)), Column("vs DPX (median)", VS_DPX.value), EVALUATIONS),
    ),
    # deploy.md
    "deploy_resnet18": Deploy("results/deploy_resnet18.json", "ResNet-18"),
    "deploy_mobilenet_v2": Deploy("results/deploy_mobilenet_v2.json", "MobileNetV2"),
    "cost_resnet18": CostComparison(
        "results/step_rule_resnet18.json",
        "ResNet-18 (10 classes), max rate 0.9",
        (
            ("dpx", "DPX, `--cost filters`"),
            ("dpx, cost macs", "DPX, `--cost macs`"),
            ("default", "the default, `--cost filters`"),
            ("default, cost macs", "the default, `--cost macs`"),
        ),
    ),
    "step_rule_resnet18": StepRules(
        "results/step_rule_resnet18_report_0.json",
        "results/step_rule_resnet18_report_5.json",
        "ResNet-18 (10 classes), DPX and the default",
    ),
    "step_rule_transfer": StepRules(
        "results/step_rule_transfer_report_0.json",
        "results/step_rule_transfer_report_5.json",
        "ResNet-18 (8 classes) to 2 unseen, head fitted, DPX and the default",
    ),
    "step_rule_mobilenet_v2": StepRules(
        "results/step_rule_mobilenet_v2_report_0.json",
        "results/step_rule_mobilenet_v2_report_5.json",
        "MobileNetV2 (10 classes), the default (cap 0.97)",
    ),
    "thread_profile": ThreadProfile(
        "results/thread_profile.json",
        "ONNX Runtime setting",
        (
            ((1, True, "all"), "1 thread, ORT_ENABLE_ALL (NCHWc)"),
            ((2, True, "all"), "2 threads, spinning (ORT's default)"),
            ((2, False, "all"), "2 threads, not spinning"),
            ((1, True, "extended"), "1 thread, ORT_ENABLE_EXTENDED (plain NCHW)"),
            ((2, True, "extended"), "2 threads, ORT_ENABLE_EXTENDED"),
        ),
    ),
    **TRANSFER_TABLES,  # transfer.md (results_catalogue_transfer.py)
    # study.md: bash examples/study.sh (the 30-reference, 2-class runs are fashion_methods_round16.json)
    "study_ablation": Table(
        "results/study/ablation.json",
        "ablation (ResNet-18, round_to 16)",
        (
            ("dpx round_to=16", "dpx"),
            ("dpx + rate change round_to=16", "dpx + rate change"),
            ("sd-dpx K=10 round_to=16", "sd-dpx K=10"),
        ),
        STUDY,
    ),
    "study_mobilenet_v2": Table(
        "results/study/mobilenet_v2.json",
        "MobileNetV2, round_to 16",
        (("px round_to=16", "px"), ("dpx round_to=16", "dpx"), ("sd-dpx K=10 round_to=16", "sd-dpx K=10")),
        STUDY,
    ),
    "study_references": Table(
        "results/fashion_methods_round16.json",
        "reference images",
        tuple(
            Row(f"{method} round_to=16", f"{count} refs/class: {method}", source)
            for count, source in STUDY_REFERENCES
            for method in ("px", "dpx", "sd-dpx K=10")
        ),
        STUDY,
    ),
    "study_classes": Table(
        "results/fashion_methods_round16.json",
        "classes per task",
        tuple(
            Row(f"{method} round_to=16", f"{count} classes: {method}", source)
            for count, source in STUDY_CLASSES
            for method in ("px", "dpx", "sd-dpx K=10")
        ),
        STUDY,
    ),
    # methods.md
    "methods_tune": Table(
        "results/fashion_tune.json",
        "method (seeds 0-4)",
        (
            *((method, method) for method in ("px", "dpx", "sd-dpx K=3", "sd-dpx K=10", "sd-dpx K=30")),
            Row("dpx round_to=8", "dpx, round_to 8", "results/fashion_round_to.json"),
            Row("sd-dpx K=10 round_to=8", "sd-dpx K=10, round_to 8", "results/fashion_round_to.json"),
            Row("dpx round_to=16", "dpx, round_to 16", "results/fashion_round_to.json"),
            Row("sd-dpx K=10 round_to=16", "**sd-dpx K=10, round_to 16**", "results/fashion_round_to.json"),
        ),
        (TASKS, *METHODS),
    ),
    "methods": Table(
        "results/fashion_methods.json",
        "method (seeds 5-9)",
        (
            *((method, method) for method in ("px", "dpx", "sd-dpx K=10")),
            *(
                Row(f"{method} round_to=16", f"{method}, round_to 16", "results/fashion_methods_round16.json")
                for method in ("px", "dpx")
            ),
            Row(
                "sd-dpx K=10 round_to=16",
                "**sd-dpx K=10, round_to 16** (the CLI default adds the options of "
                "[Beyond the paper](beyond-the-paper.md))",
                "results/fashion_methods_round16.json",
            ),
        ),
        (*METHODS, Column("per task: AUC lowest class (seeds 5, 6, 7, 8, 9)", per_task(key("auc_lowest_class"), 3))),
    ),
    # retraining.md
    "retraining": Retraining(
        "results/retraining.json",
        (
            (30, "sd-dpx", "SD-DPX (no training)"),
            (30, "sd-dpx + fine-tuning", "SD-DPX + fine-tuning"),
            (30, "progressive", "progressive retraining"),
            (300, "sd-dpx + fine-tuning", "SD-DPX + fine-tuning"),
            (300, "progressive", "progressive retraining"),
        ),
    ),
    # speed.md
    "export_speed": ExportSpeed("results/export_speed.json"),
    **SPEED_TABLES,  # ship-speed.md (results_kinds_speed.py)
}
