"""Griffe extension for the docs build: render the docstrings' Sphinx roles as links.

seqprep's docstrings cross-reference each other the Sphinx way (``:class:`BucketSampler```,
``:func:`~seqprep.bucketed_dataset```, ``:meth:`plan <seqprep.BucketSampler.plan>```), which
mkdocstrings would print as raw text. Once the package is loaded, this extension rewrites every
role into the Markdown cross-reference that mkdocs-autorefs resolves across pages,
``[`BucketSampler`][seqprep.planning._sampler.BucketSampler]``, when its target is rendered on
a page of the API reference (``docs/api/*.md``: a ``::: path`` line, or a public member of
one); otherwise (a private helper, a name outside seqprep) into plain code, ``BucketSampler``
between backticks, so no raw role and no dangling link is ever left.

A target is looked up as Sphinx would: as written, as ``seqprep.<target>``, through the
top-level package's lazy exports (``seqprep.BucketSampler`` is
``seqprep.planning._sampler.BucketSampler``), then relative to the documented object (a bare
``:meth:`state_dict``` in a class's docstring is that class's method) and its module.

``tests/test_docs.py`` runs this module on the package, without mkdocs, and fails on a role
left raw or a public target left unlinked.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import griffe

API_PAGES = Path(__file__).resolve().parent.parent / "api"
PACKAGE = "seqprep"

# :role:`target`, :role:`~target`, :role:`title <target>`, :py:role:`!target`.
ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|attr|mod|data|exc|obj|const|type):`(?P<body>[^`]+)`"
)
# Anything shaped like a role, including roles this module does not know (the test's net).
ANY_ROLE = re.compile(r"(?<![\w`]):(?:[a-z]+:)?[a-z]+:`[^`]+`")
_DIRECTIVE = re.compile(r"^:::\s+(?P<path>[\w.]+)[ \t]*\n(?P<options>(?:[ \t]+\S.*\n)*)",
                        re.MULTILINE)
_INHERITED = re.compile(r"^\s+inherited_members:\s*true\s*$", re.MULTILINE)


def split_role(body: str) -> tuple[str, str | None]:
    """``(title, target)`` of a role's body; ``target`` is None when it must not link (``!``).

    Example:
        >>> split_role("~seqprep.BucketSampler")
        ('BucketSampler', 'seqprep.BucketSampler')
        >>> split_role("plan <seqprep.BucketSampler.plan>")
        ('plan', 'seqprep.BucketSampler.plan')
        >>> split_role("!Bucketer")
        ('Bucketer', None)
    """
    body = body.strip()
    explicit = re.fullmatch(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>", body, re.DOTALL)
    if explicit:
        return " ".join(explicit["title"].split()), explicit["target"].strip().lstrip("~")
    if body.startswith("!"):
        return body[1:].lstrip("~"), None
    if body.startswith("~"):
        target = body[1:]
        return target.rsplit(".", 1)[-1], target
    return body, body


def rewrite(text: str, resolve: Callable[[str], str | None]) -> str:
    """Replace every role in ``text``: a link where ``resolve(target)`` names an anchor, else code.

    Example:
        >>> anchors = {"BucketSampler": "seqprep.planning._sampler.BucketSampler"}
        >>> rewrite("See :class:`BucketSampler` and :func:`_helper`.", anchors.get)
        'See [`BucketSampler`][seqprep.planning._sampler.BucketSampler] and `_helper`.'
    """

    def one(match: re.Match[str]) -> str:
        title, target = split_role(match["body"])
        anchor = resolve(target) if target else None
        return f"[`{title}`][{anchor}]" if anchor else f"`{title}`"

    return ROLE.sub(one, text)


def rendered_paths(package: griffe.Module, pages: Path = API_PAGES) -> set[str]:
    """The paths the API pages render: each ``::: path`` line and the public members shown.

    Members follow the build's options (``filters: ["!^_"]``): a class shows its public methods
    and attributes (and, where its directive sets ``inherited_members: true``, those it inherits,
    under its own path), a module its public functions and classes (not what it imports).
    """
    rendered: set[str] = set()
    for page in sorted(pages.glob("*.md")):
        for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8") + "\n"):
            obj = lookup(package, match["path"])
            if obj is None:
                continue
            rendered.add(obj.path)
            for member in _public_members(obj):
                rendered.add(member.path)
                if member.is_class:
                    rendered.update(m.path for m in _public_members(member))
            if obj.is_class and _INHERITED.search(match["options"]):
                rendered.update(f"{obj.path}.{name}" for name in obj.inherited_members
                                if not name.startswith("_"))
    return rendered


def directives(pages: Path = API_PAGES) -> dict[str, list[str]]:
    """The ``::: path`` lines of each API page, by page name."""
    return {page.name: [m["path"] for m in _DIRECTIVE.finditer(
                page.read_text(encoding="utf-8") + "\n")]
            for page in sorted(pages.glob("*.md"))}


def _public_members(obj: Any) -> Iterator[Any]:
    for name, member in obj.members.items():
        if not name.startswith("_") and not member.is_alias:
            yield member


def lookup(package: griffe.Module, path: str) -> Any | None:
    """The object at a dotted ``path`` in ``package`` (aliases followed), or None."""
    if path != package.path and not path.startswith(package.path + "."):
        return None
    try:
        obj = package if path == package.path else package[path[len(package.path) + 1:]]
        return obj.final_target if obj.is_alias else obj
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def lazy_exports(package: griffe.Module) -> dict[str, str]:
    """Every lazy public name (-> its defining module), read statically from the packages'
    ``attach(__name__, {name: module, ...})`` calls (relative modules made absolute)."""
    exports: dict[str, str] = {}
    for init in sorted(Path(package.filepath).parent.glob("*/__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        dotted = f"{package.path}.{init.parent.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "attach"
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Dict)):
                for name, module in ast.literal_eval(node.args[1]).items():
                    exports[name] = dotted + module if module.startswith(".") else module
    return exports


class Resolver:
    """Finds the rendered anchor a role's target names, from the object whose docstring it is."""

    def __init__(self, package: griffe.Module, pages: Path = API_PAGES) -> None:
        self.package = package
        self.exports = lazy_exports(package)
        self.rendered = rendered_paths(package, pages)

    def candidates(self, target: str, context: Any | None) -> Iterator[str]:
        """Where ``target`` may live, in the order a reader would look."""
        name = self.package.path
        target = target.strip().rstrip("()")
        yield target
        yield f"{name}.{target}"
        short = target[len(name) + 1:] if target.startswith(name + ".") else target
        head, _, rest = short.partition(".")
        if head in self.exports:
            yield ".".join(filter(None, [self.exports[head], head, rest]))
        stage, _, inner = short.partition(".")  # seqprep.<stage>.<name>: the stage's export
        head, _, rest = inner.partition(".")
        if head in self.exports and self.exports[head].startswith(f"{name}.{stage}."):
            yield ".".join(filter(None, [self.exports[head], head, rest]))
        scope = context
        while scope is not None:
            yield f"{scope.path}.{target}"
            scope = scope.parent

    def __call__(self, target: str, context: Any | None = None) -> str | None:
        for path in self.candidates(target, context):
            if path in self.rendered:  # an inherited member, shown under its subclass
                return path
            obj = lookup(self.package, path)
            if obj is not None:
                return obj.path if obj.path in self.rendered else None
        return None


def walk(obj: Any) -> Iterator[Any]:
    """``obj`` and every object defined in it (aliases, i.e. imported names, left out)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from walk(member)


def rewrite_package(package: griffe.Module, pages: Path = API_PAGES) -> Resolver:
    """Rewrite the roles of every docstring in ``package``, in place; returns the resolver."""
    resolver = Resolver(package, pages)
    for obj in walk(package):
        docstring = obj.docstring
        if docstring is None or not ROLE.search(docstring.value):
            continue
        docstring.value = rewrite(docstring.value, lambda t, o=obj: resolver(t, o))
        docstring.__dict__.pop("parsed", None)  # a parse cached before the rewrite
    return resolver


class CrossReferences(griffe.Extension):
    """Rewrite Sphinx roles as cross-reference links once the package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path == PACKAGE:
            rewrite_package(pkg)
