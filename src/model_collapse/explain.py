"""`collapse explain KIND`: a component's fields with their type, default and description.

Read from the config classes themselves (every field carries a pydantic description), so what is
printed is what validation accepts. Nothing here imports torch: config classes are torch-free.
"""

from __future__ import annotations

import textwrap
import typing

from pydantic_core import PydanticUndefined

from .errors import ConfigError

# (noun, registry group, config key) per component type
COMPONENTS = [("source", "sources", "source"), ("family", "families", "model"), ("regime", "regimes", "regime"),
              ("filter", "filters", "filter"), ("metric", "metrics", "metrics")]
PLURAL = {"source": "sources", "family": "families", "regime": "regimes", "filter": "filters", "metric": "metrics"}


def _classes() -> dict[str, dict[str, tuple[type, str]]]:
    """noun -> {kind: (the pydantic model of its fields, its docstring)} (metrics: their Params model and
    its docstring; the code computing a metric is not imported: image metrics would load torch)."""
    from .plugins import registry
    out = {}
    for noun, group, _ in COMPONENTS:
        reg = registry(group)
        out[noun] = {k: ((v.params, v.params.__doc__ if v.params.__name__ != "Params" else "") if noun == "metric"
                         else (v, v.__doc__ or "")) for k, v in reg.items()}
    return out


def _type(annotation) -> str:
    """A field's type as a reader writes it: int, float, list[float], 'a' | 'b', ... | None."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join("None" if a is type(None) else _type(a) for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type(a) for a in args)}]" if args else name
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default(field) -> str:
    """A field's default as YAML would read it ('required' when it has none)."""
    if field.default_factory is not None:
        return repr(field.default_factory())
    if field.default is PydanticUndefined:
        return "required"
    return repr(field.default)


def fields(model) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of every field of a config model."""
    return [(name, _type(f.annotation), _default(f), f.description or "")
            for name, f in model.model_fields.items()]


def _describe(noun: str, key: str, kind: str, entry: tuple[type, str]) -> str:
    """The text for one component."""
    model, doc = entry
    doc = doc.strip().splitlines()
    head = f"{noun} {kind}" + (f": {doc[0]}" if doc else "")
    where = f"(metrics: [{{name: {kind}, ...}}])" if noun == "metric" else f"({key}: {{kind: {kind}, ...}})"
    lines = [head, f"  {where}"]
    rows = [r for r in fields(model) if r[0] not in ("kind", "name")]   # the kind is the header
    if not rows:
        lines.append("  (no fields)")
    for name, typ, default, desc in rows:
        lines.append(f"  {name}: {typ} = {default}")
        lines += textwrap.wrap(desc or "(no description)", width=96, initial_indent="      ",
                               subsequent_indent="      ")
    return "\n".join(lines)


def explain(kind: str | None = None) -> str:
    """The fields of every component named `kind` (`family:gaussian` picks one), or, with no kind, the
    kinds there are per component type; ConfigError for an unknown kind."""
    classes = _classes()
    if not kind:
        return "\n".join(f"{PLURAL[noun]}: {', '.join(classes[noun])}" for noun, _, _ in COMPONENTS) + \
            "\n(collapse explain KIND shows one; NOUN:KIND, e.g. source:gaussian, picks among namesakes)"
    want_noun, _, want = kind.rpartition(":") if ":" in kind else ("", "", kind)
    found = [(noun, key, want, classes[noun][want]) for noun, _, key in COMPONENTS
             if want in classes[noun] and want_noun in ("", noun)]
    if not found:
        listed = "; ".join(f"{PLURAL[noun]}: {', '.join(classes[noun])}" for noun, _, _ in COMPONENTS)
        raise ConfigError(f"no component named '{kind}'; {listed}")
    return "\n\n".join(_describe(*f) for f in found)
