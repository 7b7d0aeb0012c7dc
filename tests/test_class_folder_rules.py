"""Which output a class folder means (issue 34, item 4): one rule at a time, and what two rules read
differently is refused."""

from __future__ import annotations

import pytest

from sddpx_tp.data.references import resolve_class
from sddpx_tp.errors import UserError
from sddpx_tp.models.registry import ModelSpec

NAMES = ["tabby_cat", "tabby cat", "zero", "one", "two", "Egyptian cat", "3", "Tiger Cat", "x"]
SPEC = ModelSpec("m", class_names=NAMES)


def test_an_exact_name_wins_over_the_underscore_rule() -> None:
    assert resolve_class("tabby_cat", SPEC, len(NAMES)) == 0
    assert resolve_class("tabby cat", SPEC, len(NAMES)) == 1


def test_underscores_and_case_still_find_a_name_written_otherwise() -> None:
    assert resolve_class("egyptian_cat", SPEC, len(NAMES)) == 5
    assert resolve_class("tiger_cat", SPEC, len(NAMES)) == 7


def test_digits_are_an_output_index_unless_a_class_is_named_so_elsewhere() -> None:
    assert resolve_class("2", SPEC, len(NAMES)) == 2  # no class is named "2"
    with pytest.raises(UserError, match=r"'3' is ambiguous: output index 3, or the class named '3' \(output 6\)"):
        resolve_class("3", SPEC, len(NAMES))
    named_in_place = ModelSpec("m", class_names=["a", "b", "c", "3"])
    assert resolve_class("3", named_in_place, 4) == 3  # the same output either way: nothing to refuse


def test_two_names_that_read_alike_are_refused() -> None:
    spec = ModelSpec("m", class_names=["Sea lion", "sea_lion", "dog"])
    with pytest.raises(UserError, match="ambiguous"):
        resolve_class("sea lion", spec, 3)  # neither is written exactly so
    assert resolve_class("sea_lion", spec, 3) == 1  # exactly the second
