"""`--head fit` with a class of one image (issue 34, item 5): one line, exit 2, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner
from helpers import prune_args

from sddpx_tp.cli import main


def test_a_class_of_one_image_is_refused_before_anything_is_written(data: dict[str, Path], tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    for folder, count in (("0", 1), ("6", 4)):
        (refs / folder).mkdir(parents=True)
        for image in sorted((data["refs"] / folder).iterdir())[:count]:
            shutil.copy(image, refs / folder / image.name)
    run = tmp_path / "run"
    arguments = [*prune_args({**data, "refs": refs}, run), "--head", "fit"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "sddpx-tp: error: --head fit needs at least 2 reference images of every class to fit and check the head; "
        "the class folder '0' has 1: add images, or leave out --head fit"
    ]
    assert not run.exists()  # no marker, no log
