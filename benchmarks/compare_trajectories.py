"""Two results files of the same benchmark, compared record for record: is the behaviour identical?

    python benchmarks/compare_trajectories.py results/floor_plan_before.json results/floor_plan_after.json

For a change that must not change behaviour (a restructuring): run the same benchmark before and
after it (e.g. ``fashion_ablation.py --configs repairs --only dpx "sd-dpx, new default (lstsq, ridge
0.1)"``), then compare. Every field of every trajectory record must be equal except the wall times.
Exit code 1 when any record differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TIMINGS = {"seconds", "evaluation_seconds", "reference_seconds", "relevance_seconds"}


def differences(
    before: dict[str, Any], after: dict[str, Any], ignored: frozenset[str] = frozenset()
) -> tuple[int, list[str]]:
    """The number of records compared and a line for each that differs (or each run missing on one side)."""
    runs_before = {(run["label"], run["seed"]): run for run in before["runs"]}
    runs_after = {(run["label"], run["seed"]): run for run in after["runs"]}
    found = [f"{key}: only in one file" for key in sorted(runs_before.keys() ^ runs_after.keys())]
    compared = 0
    for key in sorted(runs_before.keys() & runs_after.keys()):
        records_before, records_after = runs_before[key]["trajectory"], runs_after[key]["trajectory"]
        if len(records_before) != len(records_after):
            found.append(f"{key}: {len(records_before)} records before, {len(records_after)} after")
        for one, other in zip(records_before, records_after, strict=False):
            compared += 1
            changed = sorted(
                field for field in (one.keys() | other.keys()) - TIMINGS - ignored if one.get(field) != other.get(field)
            )
            if changed:
                found.append(f"{key} step {one.get('step')}: {', '.join(changed)} differ")
    return compared, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore", nargs="+", default=[], help="fields a later version added (e.g. judged_counts)")
    args = parser.parse_args()
    before, after = (json.loads(path.read_text()) for path in (args.before, args.after))
    compared, found = differences(before, after, frozenset(args.ignore))
    for line in found:
        print(line)
    ignored = "".join(f", {field}" for field in args.ignore)
    print(f"{compared - len(found)}/{compared} records identical (every field but the wall times{ignored})")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
