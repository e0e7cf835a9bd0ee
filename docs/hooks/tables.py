"""MkDocs hook: the integrator and method tables, generated from the registries at build time.

``on_page_markdown`` replaces ``<!-- integrators-table -->`` and ``<!-- methods-table -->`` by tables
built from ``framework.integrators.INTEGRATORS`` and ``framework.methods.METHODS``: what each entry does
and its reference come from its docstrings (an integrator's module docstring, a method's class
docstring), its parameters from its constructor (and, for integrators, ``conf/integrator/<name>.yaml``),
and its tests from the files under ``tests/`` that name it. Only the summary of what each entry was
verified against (the measured differences) is kept here by hand, in ``VERIFIED``; an entry
registered without one, or one left here for a name no longer registered, is a warning, which
``mkdocs build --strict`` turns into a failure. So the tables cannot drift from the registries.
"""

from __future__ import annotations

import inspect
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("mkdocs.hooks.tables")

# What each integrator's results were compared with, and the largest relative difference measured
# (tests/fidelity/, tests/unit/integrators/); "torchjd's properties": tests/fidelity/test_torchjd_properties.py.
VERIFIED_INTEGRATORS: dict[str, str] = {
    "sum": "closed form; torchjd's properties",
    "pcgrad": "LibMTL@4336804 `PCGrad.py` (same permutations): 7e-16; deviation: LibMTL also projects a gradient "
    "on its own (projected) self, we skip it as torchjd does (differs on 9 of 200 random matrices)",
    "mgda": "LibMTL@4336804 `MGDA.py` (`mgda_gn='none'`): 5e-13; deviation: LibMTL's two-vector step returns "
    "0.999/0.001 at the degenerate ends, we 1/0",
    "mmpareto": "GeWu-Lab/MMPareto_ICML2024@a339db3 `MMPareto.py`, the real trainer for 6 steps, with conflicts at "
    "`|g_mm|/|g_m|` down to 4e-3: 1e-16",
    "upgrad": "torchjd 0.18.0 `UPGrad`; torchjd's properties",
    "dualproj": "torchjd 0.18.0 `DualProj`: 3e-15",
    "cagrad": "LibMTL@4336804 `CAGrad.py` (`rescale=0`): 2e-5 (solvers); torchjd 0.18.0: 4e-10",
    "nash_mtl": "LibMTL@4336804 `Nash_MTL.py`: 5e-9 (2e-2 at a 1e-3 norm ratio, where ECOS is inaccurate); "
    "torchjd 0.18.0: 5e-7; solver fallbacks counted (`grad/G/events/solver_fallback`)",
    "imtl_g": "torchjd 0.18.0 `IMTLG`: 6e-16 on float64 gradients; deviation: on float32 rank-deficient groups "
    "its pseudo-inverse keeps round-off directions",
    "aligned_mtl": "LibMTL@4336804 `Aligned_MTL.py`: 3e-15 (we average where LibMTL sums)",
    "gradvac": "LibMTL@4336804 `GradVac.py` (`group_type=0`): 2e-15 over 4 steps",
    "config": "torchjd 0.18.0 `ConFIG`",
    "graddrop": "torchjd 0.18.0 `GradDrop`",
    "fairgrad": "torchjd 0.18.0 `FairGrad`",
    "excess_mtl": "LibMTL@4336804 `ExcessMTL.py` (the official code's first call): 1e-6 up to the weights' sum; "
    "torchjd 0.18.0",
    "pcd": "torchjd 0.18.0 `PCD`",
    "trimmed_mean": "torchjd 0.18.0 `TrimmedMean`",
    "random": "torchjd 0.18.0 `Random` (same draws)",
    "mean": "torchjd 0.18.0 `Mean`",
    "cr_mogm": "torchjd 0.18.0 `CRMOGMWeighting`",
    "modo": "torchjd 0.18.0 `MoDo`",
    "sdmgrad": "torchjd 0.18.0 `SDMGrad`",
}

# Cost path: "Gram" decides from the k x k Gram matrix; "matrix" builds the k x d gradient matrix;
# "state": keeps state across steps; "RNG": draws random numbers from its own seeded generator.
COST: dict[str, str] = {
    "sum": "one backward (fixed combination)",
    "mean": "one backward (fixed combination)",
    "mgda": "Gram",
    "mmpareto": "Gram",
    "pcgrad": "Gram, RNG",
    "upgrad": "Gram",
    "dualproj": "Gram",
    "cagrad": "Gram",
    "nash_mtl": "Gram, state",
    "imtl_g": "Gram",
    "aligned_mtl": "Gram",
    "gradvac": "Gram, state, RNG",
    "fairgrad": "Gram",
    "cr_mogm": "Gram, state",
    "modo": "Gram, state",
    "sdmgrad": "Gram, state",
    "pcd": "Gram, state",
    "random": "Gram, state, RNG",
    "excess_mtl": "matrix, state",
    "config": "matrix",
    "graddrop": "matrix, RNG",
    "trimmed_mean": "matrix",
}

# What each method's step was compared with (tests/fidelity/test_<name>.py), and the difference measured.
VERIFIED_METHODS: dict[str, str] = {
    "none": "the integrator alone",
    "ogm_ge": "GeWu-Lab/OGM-GE_CVPR2022@343dc1d `main.py` (OGM and GE, identical noise draws): < 1e-10",
    "agm": "lihong2303/AGM_ICCV2023@5a65542 `run/AVMNIST_main.py`: < 1e-10; pads features where the code re-runs "
    "encoders on zeroed inputs (same without BatchNorm/dropout)",
    "pmr": "fanyunfeng-bit/Modal-Imbalance-PMR@3615e48 `main_Prototype_grad.py`, 3 epochs: < 1e-10; prototypes "
    "from the train split always (the code uses another split on some datasets)",
    "gblending": "GeWu-Lab/BalanceBenchmark@4c1482f `GBlending_trainer.py`: 0 (weights fixed; the estimate of "
    "`|G/O²|` is not compared)",
    "mmcosine": "GeWu-Lab/MMCosine_ICASSP23@00ba0a9 `main_CD.py` training: 0; deviation: the code evaluates with "
    "the plain linear layer, we with the cosine logits it trains (strict xfail)",
    "mla": "GeWu-Lab/BalanceBenchmark@4c1482f `MLA_trainer.py`, both denominators: 0 (BatchNorm buffers "
    "included); the authors' `GSPlugin` never fires (it looks for `module.weight`)",
    "gradnorm": "no authors' code; Algorithm 1 in unit tests",
    "ume": "training against GeWu-Lab/BalanceBenchmark@4c1482f `unimodal_trainer.py`: 0; the mean-logit "
    "ensemble has no code to compare",
}

_ROLES = re.compile(r":(?:func|class|meth|attr|mod):`~?\.?([^`]+)`")
_SENTENCE = re.compile(r"(?<=[.)])\s+(?=[A-Z])")
_YEAR = re.compile(r"\b(19|20)\d\d\b")
_TORCHJD = re.compile(r"torchjd's ``(\w+)``")


def _md(text: str) -> str:
    """reStructuredText inline markup as Markdown, on one line, safe in a table cell."""
    text = _ROLES.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    text = text.replace("``", "`")
    text = " ".join(text.split())
    return text.replace("|", "\\|")


def _paragraphs(doc: str | None) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", inspect.cleandoc(doc or "")) if p.strip()]


def _reference(paragraph: str) -> str:
    """The citation sentences of a paragraph (those naming a year) and the torchjd class it wraps."""
    sentences = [s for s in _SENTENCE.split(" ".join(paragraph.split())) if _YEAR.search(s)]
    wrapped = _TORCHJD.search(paragraph)
    if wrapped and not any(wrapped.group(0) in s for s in sentences):
        sentences.append(f"torchjd's ``{wrapped.group(1)}``.")
    return " ".join(sentences)


def _value(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return f"`{value}`" if isinstance(value, str) else str(value)


def _parameters(cls: type, conf: Path | None = None) -> str:
    """Constructor parameters with their defaults; a config file's values win (its magnitude keys kept
    only where the entry's own default magnitude rule uses them)."""
    from framework.registry import parameters_of

    signature = inspect.signature(cls.__init__).parameters
    params = {p: signature[p].default for p in parameters_of(cls)}
    if conf is not None and conf.exists():
        from omegaconf import OmegaConf

        node = OmegaConf.to_container(OmegaConf.load(conf))
        assert isinstance(node, dict)
        magnitude = node.pop("magnitude", "none")
        node.pop("name", None)
        if magnitude == "none":
            node.pop("gamma", None)
            node.pop("rescale", None)
        params.update(node)
    cells = []
    for name, default in params.items():
        cells.append(f"`{name}`" if default is inspect.Parameter.empty else f"`{name}` ({_value(default)})")
    return ", ".join(cells)


def _tests(patterns: list[str]) -> str:
    found = sorted({p.relative_to(ROOT).as_posix() for pattern in patterns for p in ROOT.glob(pattern)})
    return ", ".join(f"`{path}`" for path in found)


def _libmtl_rules() -> set[str]:
    """The integrators whose rule tests/fidelity/test_libmtl_rules.py compares with LibMTL's."""
    path = ROOT / "tests" / "fidelity" / "test_libmtl_rules.py"
    text = path.read_text() if path.exists() else ""
    return set(re.findall(r"^def test_(\w+?)_matches_libmtl", text, flags=re.MULTILINE))


def _check(kind: str, names: list[str], *tables: dict[str, str]) -> None:
    for table in tables:
        for name in names:
            if name not in table:
                log.warning("docs/hooks/tables.py: the registered %s %r has no entry; add one", kind, name)
        for name in set(table) - set(names):
            log.warning("docs/hooks/tables.py: %r is not a registered %s; remove its entry", name, kind)


def integrators_table() -> str:
    from framework.integrators import INTEGRATORS

    names = list(INTEGRATORS)
    _check("integrator", names, VERIFIED_INTEGRATORS, COST)
    libmtl = _libmtl_rules()
    rows = [
        "| integrator | what it does | paper; reference | parameters (defaults) | cost | verified against | tests |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        cls = INTEGRATORS[name]
        module = _paragraphs(sys.modules[cls.__module__].__doc__)
        what = module[0] if module else (_paragraphs(cls.__doc__) or [""])[0]
        reference = _reference(module[1]) if len(module) > 1 else ""
        tests = [f"tests/unit/integrators/test_{name}.py", f"tests/fidelity/test_{name}_*.py"]
        if name in libmtl:
            tests.append("tests/fidelity/test_libmtl_rules.py")
        cells = [
            f"`{name}`",
            _md(what),
            _md(reference),
            _parameters(cls, ROOT / "conf" / "integrator" / f"{name}.yaml"),
            COST.get(name, ""),
            VERIFIED_INTEGRATORS.get(name, "").replace("|", "\\|"),
            _tests(tests),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def methods_table() -> str:
    from framework.methods import METHODS

    names = list(METHODS)
    _check("method", names, VERIFIED_METHODS)
    rows = [
        "| method | paper; code followed | what it does | parameters (defaults) | its loss | verified against | tests |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        cls = METHODS[name]
        paragraphs = _paragraphs(cls.__doc__)
        if len(paragraphs) > 1 and _YEAR.search(paragraphs[0]):
            reference, what = paragraphs[0], paragraphs[1]
        else:
            reference, what = "", paragraphs[0] if paragraphs else ""
        cells = [
            f"`{name}`",
            _md(reference),
            _md(what),
            _parameters(cls) or "none",
            getattr(cls, "native_loss", ""),
            VERIFIED_METHODS.get(name, "").replace("|", "\\|"),
            _tests([f"tests/fidelity/test_{name}.py", f"tests/unit/methods/test_{name}*.py"]),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


MARKERS: dict[str, Callable[[], str]] = {
    "<!-- integrators-table -->": integrators_table,
    "<!-- methods-table -->": methods_table,
}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each table marker on a page by its table."""
    for marker, table in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, table())
    return markdown
