"""Configs document themselves: `collapse explain` prints a component's fields with type, default and
description, read from the config classes."""

from __future__ import annotations


from model_collapse.cli import main
from model_collapse.explain import fields


def test_explain_transformer_lists_every_field(capsys):
    """`collapse explain transformer` names every field of the transformer config with its description."""
    from model_collapse.families import FAMILIES
    assert main(["explain", "transformer"]) == 0
    out = capsys.readouterr().out
    cls = FAMILIES["transformer"]
    for name, typ, default, desc in fields(cls):
        if name == "kind":
            continue
        assert f"  {name}: {typ} = {default}" in out, name
        assert desc.split()[0] in out, name
    assert out.startswith("family transformer")


def test_explain_lists_and_picks(capsys):
    """No kind: every component type with its kinds; NOUN:KIND picks one of namesakes."""
    assert main(["explain"]) == 0
    out = capsys.readouterr().out
    assert "families: gaussian" in out and "metrics: params" in out
    assert main(["explain", "gaussian"]) == 0
    both = capsys.readouterr().out
    assert "source gaussian" in both and "family gaussian" in both
    assert main(["explain", "source:gaussian"]) == 0
    one = capsys.readouterr().out
    assert "source gaussian" in one and "family gaussian" not in one


def test_explain_unknown_kind_is_one_line(capsys):
    """An unknown kind: exit 2, one line listing what exists."""
    assert main(["explain", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no component named 'bogus'" in err and "transformer" in err


def _models():
    """(label, pydantic model) of every registered component's fields, and the experiment's own."""
    from model_collapse.config import Settings
    from model_collapse.explain import COMPONENTS
    from model_collapse.plugins import registry
    out = [("experiment", Settings)]
    for noun, group, _ in COMPONENTS:
        for kind, entry in registry(group).items():
            out.append((f"{noun} {kind}", entry.params if noun == "metric" else entry))
    return out


def test_every_field_has_a_description():
    """A field added without a description fails here, whatever component it belongs to (the classifier
    config nested in the vae family included)."""
    from model_collapse.nn.config import ClassifierConfig
    missing = [f"{label}: {name}" for label, model in [*_models(), ("classifier", ClassifierConfig)]
               for name, _, _, desc in fields(model) if not desc.strip() and name not in ("kind", "name")]
    assert missing == []
