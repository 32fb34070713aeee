"""Write the intersphinx inventories of ``docs/_inventories`` (run by hand, needs no connection).

The documentation links to Python, numpy, xarray, astropy and matplotlib.
Their published inventories (``objects.inv``) cannot be fetched by the
machines that build the site, so this script writes small ones holding only
the names these pages refer to, with the addresses those projects give them:

1. it builds the site without inventories and without running the examples,
   recording every reference nothing resolved (``xbkg_record_missing``);
2. for each such name of those projects it finds the object in the installed
   package (a name that does not exist is an error to fix in the docstring),
   and the page that documents it from each project's layout;
3. it writes one inventory per project in Sphinx's plain-text format
   (version 1: ``name type page``, the anchor being the name).

Run ``python docs/make_inventories.py`` after changing docstrings or pages;
the nitpicky build of the tests (``tests/test_docs.py``) fails on any name
missing from the inventories.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "_inventories"

#: Project -> (top-level package names, version of the installed package).
PROJECTS = {
    "numpy": ("numpy",),
    "xarray": ("xarray",),
    "astropy": ("astropy",),
    "matplotlib": ("matplotlib",),
}

#: Python's standard library: documented on ``library/<module>.html``, builtins elsewhere.
BUILTIN_PAGES = {
    "exception": "library/exceptions.html",
    "function": "library/functions.html",
    "class": "library/stdtypes.html",
}
#: Builtin classes Python documents with the functions (``library/functions.html#int``).
BUILTIN_CLASSES_ON_FUNCTIONS = {"bool", "complex", "float", "int", "object", "slice", "type"}
#: numpy's scalar types are documented together.
NUMPY_SCALARS_PAGE = "reference/arrays.scalars.html"
#: numpy names documented on a page of their own section.
NUMPY_PAGES = {
    "numpy.typing": "reference/typing.html",
    "numpy.random.Generator": "reference/random/generator.html",
}


def resolve(name: str) -> tuple[Any, ModuleType | None]:
    """The object named ``name`` and the module it was found in; LookupError if none."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        obj: Any = module
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                raise LookupError(name)
            obj = getattr(obj, attr)
        return obj, module
    if hasattr(builtins, name):
        return getattr(builtins, name), None
    raise LookupError(name)


def kind(obj: Any, name: str, parent: Any) -> str:
    """The inventory type (``mod``, ``class``, ``exception``, ``function``, ``method``, ...)."""
    if inspect.ismodule(obj):
        return "mod"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isclass(parent):
        if isinstance(inspect.getattr_static(parent, name.rsplit(".", 1)[1]), property):
            return "attribute"
        return "method" if callable(obj) else "attribute"
    if callable(obj) and not hasattr(obj, "__origin__"):
        return "function"
    return "data"


def python_entry(name: str, obj: Any, typ: str) -> tuple[str, str]:
    if typ == "mod":
        return typ, f"library/{name}.html"
    if name.startswith("typing."):  # special forms (Literal, Final, ...) are used as classes
        return "class", "library/typing.html"
    if "." not in name:  # a builtin
        if typ == "exception":
            return typ, BUILTIN_PAGES["exception"]
        if typ == "class" and name in BUILTIN_CLASSES_ON_FUNCTIONS:
            return typ, BUILTIN_PAGES["function"]
        if name == "None":
            return "data", "library/constants.html"
        return typ, BUILTIN_PAGES.get(typ, "library/functions.html")
    module = name.rsplit(".", 1)[0]
    while module and not _is_module(module):
        module = module.rsplit(".", 1)[0]
    return typ, f"library/{module}.html"


def numpy_entry(name: str, obj: Any, typ: str) -> tuple[str, str]:
    for prefix, page in NUMPY_PAGES.items():
        if name == prefix or name.startswith(prefix + "."):
            # ArrayLike, NDArray: aliases used as classes in annotations
            return ("class" if typ == "data" else typ), page
    if inspect.isclass(obj) and issubclass(obj, __import__("numpy").generic):
        return typ, NUMPY_SCALARS_PAGE
    if typ == "mod":
        return typ, f"reference/routines.{name.removeprefix('numpy.')}.html"
    return typ, f"reference/generated/{name}.html"


def xarray_entry(name: str, obj: Any, typ: str) -> tuple[str, str]:
    if typ == "mod":
        return typ, "api.html"
    return typ, f"generated/{name}.html"


def astropy_entry(name: str, obj: Any, typ: str) -> tuple[str, str]:
    if typ == "mod":
        sub = name.split(".")[1:]
        return typ, f"{'/'.join(sub)}/ref_api.html" if sub else "index.html"
    if typ in ("method", "attribute"):  # on the page of its class
        return typ, f"api/{name.rsplit('.', 1)[0]}.html"
    return typ, f"api/{name}.html"


def matplotlib_entry(name: str, obj: Any, typ: str) -> tuple[str, str]:
    if typ == "mod":
        return typ, f"api/{name.removeprefix('matplotlib.').replace('.', '_')}_api.html"
    return typ, f"api/_as_gen/{name}.html"


ENTRIES = {
    "python": python_entry,
    "numpy": numpy_entry,
    "xarray": xarray_entry,
    "astropy": astropy_entry,
    "matplotlib": matplotlib_entry,
}


def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def project_of(name: str) -> str | None:
    top = name.split(".")[0]
    for project, packages in PROJECTS.items():
        if top in packages:
            return project
    if top in sys.stdlib_module_names or hasattr(builtins, name):
        return "python"
    return None


def missing_references() -> list[tuple[str, str, str]]:
    """Build the site (examples not run) and return the references nothing resolved."""
    from sphinx.application import Sphinx

    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "missing.json"
        app = Sphinx(
            srcdir=str(HERE),
            confdir=str(HERE),
            outdir=str(Path(tmp) / "html"),
            doctreedir=str(Path(tmp) / "doctrees"),
            buildername="html",
            confoverrides={
                "xbkg_record_missing": str(record),
                "intersphinx_mapping": {},
                "nb_execution_mode": "off",
            },
            status=None,
            warningiserror=False,
        )
        app.build(force_all=True)
        return [tuple(r) for r in json.loads(record.read_text(encoding="utf-8"))]


def inventories(references: list[tuple[str, str, str]]) -> dict[str, dict[str, tuple[str, str]]]:
    """Project -> name -> (type, page) for the references of the external projects."""
    found: dict[str, dict[str, tuple[str, str]]] = {p: {} for p in ENTRIES}
    unknown: list[str] = []
    private: list[str] = []
    for domain, reftype, target in references:
        if domain != "py":
            continue
        project = project_of(target)
        if project is None:
            continue
        try:
            obj, _ = resolve(target)
        except LookupError:
            unknown.append(target)
            continue
        if any(part.startswith("_") for part in target.split(".")):
            private.append(target)  # no page documents it
            continue
        parent = resolve(target.rsplit(".", 1)[0])[0] if "." in target else None
        typ = kind(obj, target, parent)
        if typ == "attribute" and reftype == "meth":  # a descriptor used as a method
            typ = "method"
        found[project][target] = ENTRIES[project](target, obj, typ)
    if unknown or private:
        raise SystemExit(
            f"names that the installed packages do not have: {sorted(unknown)}; "
            f"private names, which no documentation page shows: {sorted(private)}"
        )
    return found


def write(found: dict[str, dict[str, tuple[str, str]]]) -> None:
    OUT.mkdir(exist_ok=True)
    for project, entries in found.items():
        version = importlib.import_module(project if project != "python" else "sys")
        number = (
            ".".join(map(str, sys.version_info[:2]))
            if project == "python"
            else version.__version__.split("+")[0]
        )
        lines = [
            "# Sphinx inventory version 1",
            f"# Project: {project}",
            f"# Version: {number}",
            *(f"{name} {typ} {page}" for name, (typ, page) in sorted(entries.items())),
        ]
        (OUT / f"{project}.inv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{project}: {len(entries)} names")


if __name__ == "__main__":
    write(inventories(missing_references()))
