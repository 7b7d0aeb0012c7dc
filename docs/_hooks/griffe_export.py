"""Griffe extensions for the API reference (loaded by mkdocstrings, see mkdocs.yml).

`ExportAsSubpackage`: pyproject.toml maps the package `sddpx_tp.export` to the top-level folder
`export/`; griffe reads the sources and would not find `sddpx_tp/export/`, so the folder is loaded
and attached under the name it is installed as.

`SphinxRoles`: the docstrings cross-reference in reStructuredText roles (:func:`x`, :meth:`~a.b`),
which Markdown would show verbatim; they are shown as code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|meth|class|attr|mod|data|exc|obj):`~?([^`]+)`")


class ExportAsSubpackage(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name == "sddpx_tp" and "export" not in pkg.members:
            export = loader.load("export", find_stubs_package=False)
            assert isinstance(export, griffe.Module)
            pkg.set_member("export", export)


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"`\1`", obj.docstring.value)
