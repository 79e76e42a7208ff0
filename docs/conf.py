"""Sphinx configuration of the daemonkit documentation.

Built by ``make docs``::

    .venv/bin/sphinx-build -q -W --keep-going -b html docs docs/_build/html

Warnings are errors, and the build must work from a clean clone without
network access: no intersphinx, no remote images, no install of the package
needed (the repository root is put on ``sys.path`` below).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Import daemonkit from this checkout, installed or not.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import daemonkit  # noqa: E402

# -- project -----------------------------------------------------------------

project = "daemonkit"
author = "the daemonkit authors"
copyright = "the daemonkit authors"  # noqa: A001
version = daemonkit.__version__
release = daemonkit.__version__

# -- general -----------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {
    ".md": "markdown",
    ".rst": "restructuredtext",
}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# Code blocks without a language are plain text, not Python.
highlight_language = "text"

# -- MyST --------------------------------------------------------------------

myst_enable_extensions = [
    "colon_fence",  # ::: fences for admonitions
    "deflist",
]
# Make "page.md#some-heading" links resolvable (h1-h3).
myst_heading_anchors = 3

# -- autodoc -----------------------------------------------------------------

autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
# Objects re-exported by a package (daemonkit.Daemon is daemonkit.daemon.Daemon)
# are documented once, under the module that defines them.
autodoc_inherit_docstrings = True

# Google-style "Attributes:" sections (daemonkit.timers.Timer) become
# :ivar: fields, not separate attribute entries that would collide with
# the ones autodoc finds.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

# -- HTML --------------------------------------------------------------------

html_theme = "furo"
html_title = f"daemonkit {release}"
html_static_path: list[str] = []
