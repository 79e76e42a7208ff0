"""Sphinx configuration of the daemonkit documentation.

Built by ``make docs``, which runs exactly::

    .venv/bin/sphinx-build -q -W --keep-going -b html docs docs/_build/html

Warnings are errors, and the build must work from a clean clone with no
network: no intersphinx, no remote images, and no install of the package
(the repository root is put on ``sys.path`` below).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sphinx.ext.napoleon import Config as NapoleonConfig
from sphinx.ext.napoleon.docstring import GoogleDocstring

# Import daemonkit from this checkout, installed or not.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import daemonkit  # noqa: E402

# -- project -----------------------------------------------------------------

project = "daemonkit"
author = "the daemonkit authors"
copyright = "the daemonkit authors"
version = daemonkit.__version__
release = daemonkit.__version__

# -- general -----------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {
    ".md": "markdown",
    ".rst": "restructuredtext",
}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Code blocks without a language are shown as plain text.
highlight_language = "text"

# -- MyST (the .md pages) ----------------------------------------------------

myst_enable_extensions = [
    "colon_fence",
    "deflist",
]
# "page.md#a-heading" links work for headings down to ###.
myst_heading_anchors = 3

# -- autodoc -----------------------------------------------------------------

# Type hints stay in the signature: the docstrings are prose, without
# :param: fields that "description" mode could attach them to.
autodoc_typehints = "signature"
# pyuv has no wheel for today's Pythons (python -m daemonkit build-pyuv builds it): the
# docs build without it.
autodoc_mock_imports = ["pyuv"]
autodoc_member_order = "bysource"
autodoc_default_options = {
    "show-inheritance": True,
}
# Each object is documented once (api.md): in the module that defines it,
# except the framers and the test helpers, documented under the package
# users import them from. Re-exports elsewhere only link to that entry.

# Google-style sections (the "Attributes:" of daemonkit.core.timers.Timer) are
# rendered with napoleon's parser, but only in the docstrings of modules,
# classes and functions. sphinx.ext.napoleon itself would also rewrite every
# attribute and property docstring that has a colon in its first line
# ("This connection's logger: every line starts with ...") as
# "type: description", and show the sentence as a type. Attributes listed
# in a class's "Attributes:" become :ivar: fields of that class.
_NAPOLEON_CONFIG = NapoleonConfig(
    napoleon_google_docstring=True,
    napoleon_numpy_docstring=False,
    napoleon_use_ivar=True,
)


def _google_sections(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what in ("attribute", "data", "property"):
        return
    lines[:] = GoogleDocstring(lines, _NAPOLEON_CONFIG, app, what, name, obj, options).lines()


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _google_sections, priority=500)


# -- HTML --------------------------------------------------------------------

html_theme = "furo"
html_title = f"daemonkit {release}"
