"""Sphinx configuration: the Markdown pages (MyST) and the API reference built from the docstrings.

Build (warnings are errors, as in CI, where ``tests/test_docs.py`` runs it):
``sphinx-build -W --keep-going -b html docs docs/_build/html``
"""

import os
import sys

# Keras reads KERAS_BACKEND when it is first imported; autodoc imports keras_bridge, which selects it too.
os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from keras_bridge import __version__

project = "keras_bridge"
author = "keras_bridge authors"
copyright = "keras_bridge authors"
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Google-style docstrings (the package's ruff pydocstyle convention).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Overrides of Lightning hooks without a docstring of their own stay out of the reference.
autodoc_inherit_docstrings = False
autodoc_default_options = {"show-inheritance": True}
# Markdown headings get anchors, so pages can link to sections ("keras-to-lightning.md#callbacks").
myst_heading_anchors = 3

html_theme = "alabaster"
html_static_path: list = []


def _defined_in_dependency(obj):
    """True for a member that torch or Lightning define (what a KerasModule inherits from LightningModule)."""
    target = getattr(obj, "fget", None) or getattr(obj, "__func__", None) or obj
    module = getattr(target, "__module__", None) or ""
    return module.split(".")[0] in ("torch", "lightning", "pytorch_lightning", "lightning_fabric")


def _skip_dependency_members(app, what, name, obj, skip, options):
    # `:inherited-members:` on KerasModule documents the Keras model methods it inherits, not LightningModule's API.
    if what == "class" and options.get("inherited_members") and _defined_in_dependency(obj):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_dependency_members)
