"""Sphinx helpers of the xbkg documentation (loaded by ``docs/conf.py``).

- ``mathml``: a math renderer that writes MathML into the pages at build time
  (latex2mathml). Browsers draw MathML themselves, so formulas render without
  JavaScript and without a connection (no MathJax from a CDN).
- Public names for types: autodoc names classes by the module that defines
  them (``xarray.core.dataset.Dataset``); such references are rewritten to the
  shortest public name of the same object (``xarray.Dataset``) before
  intersphinx looks them up in the inventories of ``docs/_inventories``.
- Downloads: every example page gets links to its notebook (``.ipynb``, made
  from the jupytext script) and to the script itself, both written into the
  built site.
- ``xbkg_record_missing``: when set (by ``docs/make_inventories.py``), the
  references nothing resolved are written to that JSON file instead of being
  reported, to make the inventories from.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.math import get_node_equation_number

#: Packages whose references go to intersphinx, with their documentation sites.
EXTERNAL = ("numpy", "xarray", "astropy", "matplotlib", "scipy", "dask")

#: Where the example scripts are, relative to the documentation source folder.
EXAMPLES = "examples"


# --------------------------------------------------------------------------- math as MathML


def _mathml(latex: str, display: str) -> str:
    from latex2mathml.converter import convert

    return str(convert(latex.strip(), display=display))


def visit_math(self: Any, node: nodes.math) -> None:
    self.body.append(self.starttag(node, "span", "", CLASS="math notranslate"))
    self.body.append(_mathml(node.astext(), "inline"))
    self.body.append("</span>")
    raise nodes.SkipNode


def visit_displaymath(self: Any, node: nodes.math_block) -> None:
    self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
    if node["number"]:
        number = get_node_equation_number(self, node)
        self.body.append(f'<span class="eqno">({number})')
        self.add_permalink_ref(node, "Link to this equation")
        self.body.append("</span>")
    for part in (p for p in node.astext().split("\n\n") if p.strip()):
        self.body.append(_mathml(part, "block"))
    self.body.append("</div>\n")
    raise nodes.SkipNode


# --------------------------------------------------------------------------- public names


#: Abbreviations of docstrings and of annotations imported for type checking only.
ALIASES = {
    "xr": "xarray",
    "np": "numpy",
    "fits": "astropy.io.fits",
    "u": "astropy.units",
    "Path": "pathlib.Path",
    "Axes": "matplotlib.axes.Axes",
    "Figure": "matplotlib.figure.Figure",
    "NDArray": "numpy.typing.NDArray",
    "ArrayLike": "numpy.typing.ArrayLike",
    "DataTree": "xarray.DataTree",
}


def public_name(target: str) -> str | None:
    """The shortest public name of the object ``target`` names, if another.

    ``xarray.core.dataset.Dataset`` -> ``xarray.Dataset``;
    ``astropy.io.fits.hdu.hdulist.HDUList`` -> ``astropy.io.fits.HDUList``;
    ``xr.Dataset`` -> ``xarray.Dataset`` (the abbreviations of :data:`ALIASES`).
    """
    target = target.strip("'\"")
    first, dot, rest = target.partition(".")
    if first in ALIASES:
        target = ALIASES[first] + dot + rest
        return public_name(target) or target
    parts = target.split(".")
    if parts[0] not in EXTERNAL or len(parts) < 3:
        return None
    obj = _resolve(target)
    if obj is None:
        return None
    name = parts[-1]
    for k in range(1, len(parts) - 1):
        prefix = ".".join(parts[:k])
        if any(p.startswith("_") for p in parts[1:k]):
            break
        if _resolve(f"{prefix}.{name}") is obj:
            return f"{prefix}.{name}"
    return None


def _resolve(dotted: str) -> Any:
    """The object a dotted name names, or None."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def xbkg_name(target: str, module: str | None) -> str | None:
    """Where the xbkg object that ``target`` names in ``module`` is documented.

    Names are looked up as Python would (in ``module``, else from the package):
    ``build_background`` in :mod:`xbkg.cli` -> ``xbkg.build_background`` (its
    page), ``integrate`` -> ``xbkg.products.integrate`` (its module's page).
    """
    import xbkg

    candidates = [target] if target.startswith("xbkg") else []
    if module:
        candidates.append(f"{module}.{target}")
    candidates.append(f"xbkg.{target}")
    # a docstring of a top-level name shows in the context ``xbkg``: look in the
    # module that defines it, that is in the module that has the name
    candidates += sorted(
        f"{m}.{target}" for m in list(sys.modules) if m.startswith("xbkg.") and "._" not in m
    )
    for dotted in candidates:
        if not dotted.startswith("xbkg"):
            continue
        try:
            obj = _resolve(dotted)
        except Exception:  # an import failing while the docs are built: no link
            obj = None
        if obj is None:
            continue
        name = getattr(obj, "__name__", None)
        if name in xbkg.__all__ and getattr(xbkg, name) is obj:
            return f"xbkg.{name}"
        owner = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if isinstance(owner, str) and owner.startswith("xbkg") and qualname:
            return f"{owner}.{qualname}"
        return dotted  # a module or a constant: documented under this name
    return None


def rewrite_to_public(app: Sphinx, env: Any, node: Any, contnode: Any) -> Any:
    """Point a reference at where its object is documented.

    Names of other projects become their public names, which intersphinx
    resolves next; names of xbkg are resolved here.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    public = public_name(target)
    if public is not None:
        node["reftarget"] = public
        return None
    if target.split(".")[0] in EXTERNAL or target.split(".")[0] in ALIASES:
        if any(part.startswith("_") for part in target.split(".")[1:]):
            # a private name of another project, e.g. the type variable of a bare
            # NDArray (numpy._typing._array_like._ScalarT): no page documents it
            return contnode
        return None
    documented = xbkg_name(target, node.get("py:module"))
    if documented is None:
        return None  # not an object of xbkg: reported
    domain = env.domains["py"]
    for reftype in (node["reftype"], "obj"):
        found = domain.resolve_xref(
            env, node["refdoc"], app.builder, reftype, documented, node, contnode
        )
        if found is not None:
            return found
    # An object of xbkg that exists but is not public (not in its module's
    # ``__all__``, so without a page): shown as code, not as a link.
    return contnode


FORWARD_REF = re.compile(r"TypeAliasForwardRef\('([^']+)'\)")


def clean_annotations(app: Sphinx, what: str, name: str, obj: Any, *args: Any) -> None:
    """``ArrayLike | None`` is recorded as ``TypeAliasForwardRef('...') | None``: keep the name."""
    annotations = app.env.current_document.autodoc_annotations.get(name, {})
    for key, text in annotations.items():
        annotations[key] = FORWARD_REF.sub(r"\1", text)


_plain: dict[str, list[str]] = {}


def keep_plain(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Constants and attributes are documented in plain text (``#: Default binning: ...``).

    napoleon (priority 500) would read ``Default binning`` as the type: the
    text before it runs is kept here and put back after it (:func:`put_back_plain`).
    """
    if what in ("data", "attribute"):
        _plain[name] = list(lines)


def put_back_plain(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what in ("data", "attribute") and name in _plain:
        lines[:] = _plain.pop(name)


def cli_parser() -> Any:
    """The parser of the ``xbkg`` command, its help texts escaped for reStructuredText.

    The help texts are plain text (``|COL|``, ``10**(k/5)``), which the command
    reference renders as reStructuredText.
    """
    from xbkg.cli import build_parser

    parser = build_parser()
    seen: set[int] = set()

    def escape(p: Any) -> None:
        if id(p) in seen:
            return
        seen.add(id(p))
        for text_attr in ("description", "epilog"):
            if getattr(p, text_attr, None):
                setattr(p, text_attr, RST_SPECIAL.sub(r"\\\g<0>", getattr(p, text_attr)))
        for action in p._actions:
            if action.help:
                action.help = RST_SPECIAL.sub(r"\\\g<0>", action.help)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    escape(sub)

    escape(parser)
    return parser


RST_SPECIAL = re.compile(r"[|*`]")

_missing: set[tuple[str, str, str]] = set()


def record_missing(app: Sphinx, domain: Any, node: Any) -> bool | None:
    """Collect the references nothing resolved, instead of warning (``xbkg_record_missing``)."""
    if not app.config.xbkg_record_missing:
        return None
    _missing.add((node.get("refdomain", ""), node.get("reftype", ""), node.get("reftarget", "")))
    return True


def record_builtin(app: Sphinx, env: Any, node: Any, contnode: Any) -> None:
    """Also collect builtins (``str``, ``ValueError``), which Sphinx leaves unlinked silently."""
    target = node.get("reftarget", "")
    if app.config.xbkg_record_missing and node.get("refdomain") == "py":
        import builtins

        if "." not in target and hasattr(builtins, target):
            _missing.add(("py", node.get("reftype", ""), target))


def write_missing(app: Sphinx, exception: Exception | None) -> None:
    if app.config.xbkg_record_missing and exception is None:
        Path(app.config.xbkg_record_missing).write_text(
            json.dumps(sorted(_missing), indent=1) + "\n", encoding="utf-8"
        )


# --------------------------------------------------------------------------- downloads


def example_scripts(app: Sphinx) -> list[Path]:
    return sorted((Path(app.srcdir) / EXAMPLES).glob("*.py"))


def add_download_links(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    """Links to the notebook and the script under the title of every example page."""
    folder, _, stem = docname.rpartition("/")
    if folder != EXAMPLES or stem not in {p.stem for p in example_scripts(app)}:
        return
    html = (
        '<p class="xbkg-downloads">Download this example: '
        f'<a href="{stem}.ipynb" download>notebook ({stem}.ipynb)</a> · '
        f'<a href="{stem}.py" download>script ({stem}.py)</a></p>\n'
    )
    for section in doctree.findall(nodes.section):
        title = section.next_node(nodes.title)
        if title is not None:
            title.parent.insert(title.parent.index(title) + 1, nodes.raw("", html, format="html"))
        break


def write_downloads(app: Sphinx, exception: Exception | None) -> None:
    """Write each example as a notebook (outputs not included) and as its script."""
    if exception is not None or app.builder.format != "html":
        return
    import jupytext

    out = Path(app.outdir) / EXAMPLES
    out.mkdir(parents=True, exist_ok=True)
    for script in example_scripts(app):
        notebook = jupytext.read(script, fmt="py:percent")
        jupytext.write(notebook, out / f"{script.stem}.ipynb", fmt="ipynb")
        shutil.copyfile(script, out / script.name)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_html_math_renderer("mathml", (visit_math, None), (visit_displaymath, None))
    app.add_config_value("xbkg_record_missing", "", "env")
    # before intersphinx (priority 500), which then resolves the public name
    app.connect("missing-reference", rewrite_to_public, priority=400)
    app.connect("warn-missing-reference", record_missing)
    app.connect("missing-reference", record_builtin, priority=950)
    app.connect("autodoc-process-docstring", keep_plain, priority=400)
    app.connect("autodoc-process-docstring", put_back_plain, priority=600)
    # after sphinx.ext.autodoc.typehints has recorded the annotations (priority 500)
    app.connect("autodoc-process-signature", clean_annotations, priority=600)
    app.connect("build-finished", write_missing)
    app.connect("doctree-resolved", add_download_links)
    app.connect("build-finished", write_downloads)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
