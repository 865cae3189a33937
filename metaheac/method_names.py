"""The methods' names, in the paper's table order, without importing torch: a CLI parses `--methods`
with this alone. `metaheac.methods.METHODS` must hold exactly these (tests/test_layers.py)."""

from __future__ import annotations

RECOMMENDED = "MetaHeac+LR"  # the default of train, adapt, expand and the pipelines
METHOD_NAMES = (
    "LR",
    "MLP one-stage",
    "MLP+pre-training",
    "Shared-Bottom+pre-training",
    "MMoE+pre-training",
    "MetaHeac",
    "MetaHeac w/o HC",
    "MetaHeac w/o HE",
    "MetaHeac w/o Meta",
    "sklearn LR",  # scikit-learn's LogisticRegression per campaign on its seeds, C by CV
    "pooled LR",  # scikit-learn's LogisticRegression over every training campaign's rows, no seeds
    "Category LR",  # fit on the training campaigns of the campaign's category (coarsest hierarchy field), no seeds
    RECOMMENDED,  # metaheac/recommended/
)


def check_method(name: str) -> str:
    """`name`, or a ValueError listing the known names."""
    if name not in METHOD_NAMES:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(repr(m) for m in METHOD_NAMES)}")
    return name


def parse_methods(text: str) -> list[str]:
    """'all' or comma-separated method names; an unknown name fails here, before any work."""
    methods = list(METHOD_NAMES) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    return [check_method(name) for name in methods]
