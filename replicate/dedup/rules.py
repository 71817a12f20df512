"""The detector's rules and settings: :class:`DedupConfig`, its checks, which rules fire
for each candidate pair (:func:`_flag_rules`) and their text."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from replicate._validation import check_int, fail

DESCRIPTOR_GATE_MIN: float = 0.40
"""The copydesc32 cosine of the ``"clean"`` preset's verification gate (``descriptor_min``).
Measured with the shipped weights by ``validation/descriptor_analysis.py`` (setting ``and``,
``validation/results/descriptor.md``); set here, in one place, when the descriptor is retrained."""

# --------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class DedupConfig:
    """Signals and thresholds of the near-duplicate detector.

    A candidate pair is flagged when any rule fires:

    * ``hash_radii``: ``{method: radius}``; flagged when the Hamming distance of that
      hash is <= radius (``hash_size`` bits per side, 64 for 8);
    * ``l2_rms_max``: flagged when the RMS difference per pixel value,
      ``sqrt(||q - r||^2 / (H W C))``, is <= this (0-255 scale);
    * ``aligned_max``: flagged when the aligned distance is <= this (0..2);
    * ``ratio_max``: flagged when the aligned distance is <= ``ratio_aligned_max`` and
      at most ``ratio_max`` times the median aligned distance of the query's other
      candidates in that set (column ``aligned_ratio``): a match that stands out from the
      query's other neighbours (a ratio test, as in Lowe's SIFT matching). It keeps
      low-texture images (a ship on an empty sea), which resemble many others, out of the
      queue;
    * ``within_ratio_max``, ``within_ratio_aligned_max``: the limits of the ratio rule
      for pairs inside the query set (``within_query``), stricter by default: there the
      reference-set limits flag mostly distinct images (``None``: the same limits as for
      reference sets; ``ratio_max=None`` switches the rule off everywhere);
    * ``tiny_max``: flagged when the tiny-image distance is <= this (0..2);
    * ``feature_max``: flagged when the feature cosine distance is <= this (0..2);
    * ``edge_max``: flagged when the aligned distance is <= ``edge_aligned_max`` and the
      edge distance (column ``edge``) is <= this (0..2). The edge distance compares
      high-pass maps (grayscale minus its 3x3 box blur) at full resolution over a wider
      window, shifts up to ``edge_max_shift`` and the zooms in ``edge_scales``; it is near
      0 for the same photograph and near 1 or above for look-alikes. It is computed only
      for pairs with ``aligned <= edge_aligned_max`` (NaN elsewhere) and, inside the query
      set, in one direction. It finds crops, zooms and borders the aligned window misses;
      ``None`` switches it off (and skips computing it);
    * ``edge_ratio_max``, ``edge_ratio_edge_max``: the edge rule also fires when the edge
      distance is <= ``edge_ratio_edge_max`` and at most ``edge_ratio_max`` times the
      smallest edge distance of the query's other candidates in that set (column
      ``edge_ratio``; candidates without an edge distance count as infinitely far, the
      coarse-window ones are not counted). A ratio test again: between 1.0 and 1.1 the
      same photograph usually stands out from the query's next-best candidate, while a
      look-alike resembles several. Off by default; with ``edge_max=1.0`` and
      ``edge_ratio_max=0.9`` (the "edge ratio guard") the review queue on CIFAR-10 test
      against train is 11% shorter (0.67 instead of 0.86 false flags per true one) for an
      estimated 1.2 points less recall. Not inside the query set;
    * ``within_edge_max``: the edge rule's limit for pairs inside the query set, stricter
      by default: there 1.1 flags mostly distinct images (``None``: ``edge_max`` there too);
    * ``window_edge_max``: the edge rule's limit for candidates only the coarse-window
      search (``aligned_k``) proposed, stricter by default: being the nearest by design,
      they pass 1.1 as look-alikes far more often (``None``: ``edge_max`` for them too);
    * ``descriptor_min``: not a rule but a verification gate on all of them: when set, a
      pair is flagged only if a rule above fires AND the cosine similarity of the two
      images' copy-detection descriptors (:mod:`replicate.models.descriptor`, copydesc32;
      column ``descriptor_cos``, computed for every candidate pair) is >= this, a number in
      [0, 1] (a cosine below 0 gates nothing of use). ``None`` (the default) switches it off
      and skips the descriptor. Needs the shipped copydesc32 weights (``WeightsError`` when
      they are missing or differ).

    ``None`` switches a rule off (the signal may still propose candidates). Candidates
    come from the hash radii and the ``l2_k``, ``tiny_k``, ``aligned_k`` and ``feature_k`` nearest
    references of each query in each reference set (0 switches a kNN signal off). The
    ``aligned_k`` nearest are by a coarse aligned distance (:func:`window_knn`): shifted
    and zoomed grayscale windows pooled to 7x7, robust to the shifts and zooms that move
    a copy far down the pixel-L2 and tiny-image rankings. Being the nearest by design, its
    candidates have no ``aligned_ratio``, do not count towards the other candidates'
    median or edge ratio, so switching it on only adds flags, through the other rules
    (mostly edge, with ``window_edge_max``). The defaults (``aligned_k=5``, edge <= 1.1,
    ``window_edge_max=1.0``) were chosen with the by-eye review of CIFAR-10 test against
    train (``docs/dedup.md``).
    The aligned distance tries shifts up to ``max_shift`` pixels and the zooms in
    ``scales``. ``flips=True`` also compares the mirror image of each query (horizontal
    flip): its tiny signature proposes candidates, its aligned distance is the column
    ``aligned_mirror``, and the rule ``mirror`` fires when that is <= ``aligned_max``.
    ``feature_model`` names a zoo model for :func:`replicate.evaluation.extract_features`.
    ``within_query`` also searches for duplicates inside the query set.
    The defaults were measured on real CIFAR-10 images (``validation/validate_dedup.py``;
    tables and the by-eye review of CIFAR-10 test against train in ``docs/dedup.md``).

    **Presets** (:meth:`preset`) name the settings that review measured end to end:
    ``"recall"``, the defaults (an estimated 96% of the test images whose train
    near-duplicate is the same photograph, at 0.86 false flags per true one);
    ``"balanced"``, the edge ratio guard (``edge_max=1.0``, ``edge_ratio_max=0.9``: 11%
    fewer flags to review, 95% at 0.67); ``"clean"``, the defaults with the descriptor gate
    (``descriptor_min=DESCRIPTOR_GATE_MIN``; ``validation/results/descriptor.md``);
    ``"fast"``, without the coarse-window candidates (``aligned_k=0``: 24-25 s instead of 41-42 s on CIFAR-10 test against train, 93% at
    0.84). The thresholds above are the knobs with a measured effect; ``hash_size``,
    ``tiny_size``, ``max_shift``, ``scales``, ``edge_max_shift``, ``edge_scales`` and
    ``edge_ratio_edge_max`` are fixed by design (a wider alignment search measured worse
    there) and stay settable for experiments and for reading saved results.
    """

    hash_radii: Mapping[str, int] = field(default_factory=lambda: {"phash": 2, "dhash": 2})
    hash_size: int = 8
    l2_k: int = 3
    l2_rms_max: float | None = 4.0
    tiny_k: int = 10
    aligned_k: int = 5
    tiny_size: int = 8
    tiny_max: float | None = None
    aligned_max: float | None = 0.25
    ratio_max: float | None = 0.7
    ratio_aligned_max: float = 0.7
    within_ratio_max: float | None = 0.6
    within_ratio_aligned_max: float = 0.45
    max_shift: int = 2
    scales: tuple[float, ...] = (0.875, 0.9375, 1.0, 1.0625)
    feature_model: str | None = None
    feature_k: int = 5
    feature_max: float | None = None
    within_query: bool = True
    flips: bool = False
    edge_max: float | None = 1.1
    edge_ratio_max: float | None = None
    edge_ratio_edge_max: float = 1.1
    within_edge_max: float | None = 0.9
    window_edge_max: float | None = 1.0
    edge_aligned_max: float = 0.8
    edge_max_shift: int = 3
    edge_scales: tuple[float, ...] = (0.8125, 0.875, 0.9375, 1.0, 1.0625, 1.125)
    descriptor_min: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash_radii", dict(self.hash_radii))
        object.__setattr__(self, "scales", tuple(float(x) for x in self.scales))
        object.__setattr__(self, "edge_scales", tuple(float(x) for x in self.edge_scales))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe copy of every setting."""
        d = asdict(self)
        d["hash_radii"] = dict(self.hash_radii)
        d["scales"] = list(self.scales)
        d["edge_scales"] = list(self.edge_scales)
        if d["descriptor_min"] is None:  # off: results and stage keys as before the gate existed
            del d["descriptor_min"]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DedupConfig:
        """Inverse of :meth:`to_dict`."""
        d = dict(data)
        for key in ("scales", "edge_scales"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DedupConfig:
        """The settings named ``name`` (one of :data:`PRESETS`: ``"recall"``, the defaults;
        ``"balanced"``; ``"clean"``; ``"fast"``), with single fields replaced by ``overrides``."""
        from replicate._validation import check_choice

        check_choice("preset", name, list(PRESETS))
        return _with_overrides(cls(**PRESETS[name]), overrides)


PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "recall": MappingProxyType({}),  # the defaults
    "balanced": MappingProxyType({"edge_max": 1.0, "edge_ratio_max": 0.9}),  # the edge ratio guard
    "clean": MappingProxyType({"descriptor_min": DESCRIPTOR_GATE_MIN}),  # the defaults AND the descriptor gate
    "fast": MappingProxyType({"aligned_k": 0}),  # no coarse-window candidates
})
"""Named settings of the detector, as their differences from the defaults (``docs/dedup.md``)."""


def _with_overrides(base: DedupConfig, overrides: Mapping[str, Any]) -> DedupConfig:
    """``base`` with single fields replaced; an unknown name fails with the closest fields."""
    from replicate._validation import check_choice

    names = sorted(DedupConfig.__dataclass_fields__)
    for key in sorted(set(overrides) - set(names)):
        check_choice("keyword argument", key, names)
    return replace(base, **overrides)


RANK_COLUMNS: tuple[str, ...] = ("l2_rank", "tiny_rank", "feature_rank", "aligned_rank")
"""The 1-based neighbour ranks in a candidate table (nullable ``Int64``: missing outside the k searched)."""


# --------------------------------------------------------------------------------------
# checks of single settings: (field name, value, the whole config) -> the checked value

Check = Callable[[str, Any, DedupConfig], Any]


def _count(minimum: int = 0, maximum: int | None = None) -> Check:
    return lambda name, value, config: check_int(name, value, minimum=minimum, maximum=maximum)


def _limit(hi: float, required_by: str | None = None) -> Check:
    """A threshold in [0, hi]; None switches its rule off, unless ``required_by`` names the
    rule that needs it (whose ``<rule>_max=None`` switches it off)."""

    def check(name: str, value: Any, config: DedupConfig) -> float | None:
        if value is None:
            if required_by is None:
                return None
            raise fail(name, None, f"a number in [0, {hi:g}]",
                       f"Switch the {required_by} rule off with {required_by}_max=None.", error=TypeError)
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise fail(name, value, f"a number in [0, {hi:g}] or None", error=TypeError) from None
        if not (0.0 <= x <= hi):
            raise fail(name, value, f"in [0, {hi:g}] (or None to switch the rule off)")
        return x

    return check


def _zooms(name: str, scales: Any, config: DedupConfig) -> tuple[float, ...]:
    try:
        out = tuple(float(z) for z in scales)
    except (TypeError, ValueError):
        raise fail(name, scales, "a sequence of numbers in [0.5, 2]", error=TypeError) from None
    if not out or any(not (0.5 <= z <= 2.0) for z in out):
        raise fail(name, scales, "a non-empty sequence of zoom factors in [0.5, 2]", "Use (1.0,) for shifts only.")
    return out


def _radii(name: str, radii: Mapping[str, Any], config: DedupConfig) -> dict[str, int]:
    from replicate._validation import check_choice
    from replicate.hashing import hash_bits, list_hashers

    hs = check_int("hash_size", config.hash_size, minimum=2)
    out = {}
    for method, radius in radii.items():
        check_choice("hash_radii key", method, list_hashers())
        out[method] = check_int(f"hash_radii[{method!r}]", radius, minimum=0, maximum=hash_bits(method, hash_size=hs))
    return out


def _cosine_min(name: str, value: Any, config: DedupConfig) -> float | None:
    """A cosine threshold in [0, 1], or None (the gate off)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise fail(name, value, "a cosine in [0, 1] or None", "None switches the descriptor gate off.",
                   error=TypeError)
    x = float(value)
    if not (0.0 <= x <= 1.0):
        raise fail(name, value, "a cosine in [0, 1] (or None to switch the descriptor gate off)")
    return x


def _switch(name: str, value: Any, config: DedupConfig) -> bool:
    return bool(value)


def _as_is(name: str, value: Any, config: DedupConfig) -> Any:
    return value


# --------------------------------------------------------------------------------------
# the rules, as data


@dataclass(frozen=True)
class Rule:
    """One rule of the detector: everything about it in one place.

    Attributes
    ----------
    name
        its name; the label in ``flagged_by`` (the hash rule labels each method by name).
    columns
        ``columns(config)``: the pair-table columns of its signal that the candidate search
        computes under ``config`` (:func:`_distance_columns` is their union).
    predicate
        ``predicate(pairs, config, inside)``: ``{label: mask}`` of the pairs it flags
        (``inside`` marks pairs within the query set); empty when it is off or the table
        lacks the columns of an optional signal.
    text
        ``text(config)``: how :meth:`DedupResult.summary` states it (no parts when off).
    settings
        the :class:`DedupConfig` fields it owns, each with its check.
    gate
        a verification gate rather than a rule: its predicate's masks are the pairs it lets
        through, and a pair is flagged only when a rule fires AND every gate lets it through.
    """

    name: str
    columns: Callable[[DedupConfig], tuple[str, ...]]
    predicate: Callable[[pd.DataFrame, DedupConfig, np.ndarray], dict[str, np.ndarray]]
    text: Callable[[DedupConfig], list[str]]
    settings: Mapping[str, Check] = field(default_factory=dict)
    gate: bool = False


def _col(pairs: pd.DataFrame, name: str) -> np.ndarray:
    """A distance column with missing values (not computed) as infinitely far."""
    return np.nan_to_num(pairs[name].to_numpy(dtype=float), nan=np.inf)


def _zoom_text(scales: tuple[float, ...]) -> str:
    return f"zoom {min(scales):g}-{max(scales):g}"


_HASH = Rule(
    "hash",
    columns=lambda c: tuple(f"hamming_{m}" for m in c.hash_radii),
    predicate=lambda p, c, inside: {m: p[f"hamming_{m}"].to_numpy() <= r for m, r in c.hash_radii.items()},
    text=lambda c: [f"{m} <= {r}" for m, r in c.hash_radii.items()],
    settings={"hash_radii": _radii, "hash_size": _count(2)},
)

_L2 = Rule(
    "l2",
    columns=lambda c: ("l2", "l2_rms", "l2_rank"),
    predicate=lambda p, c, inside: {} if c.l2_rms_max is None else {"l2": p["l2_rms"].to_numpy() <= c.l2_rms_max},
    text=lambda c: [] if c.l2_rms_max is None else [f"l2_rms <= {c.l2_rms_max:g} (among {c.l2_k} nearest)"],
    settings={"l2_k": _count(), "l2_rms_max": _limit(255.0)},
)

_ALIGNED = Rule(
    "aligned",
    columns=lambda c: ("aligned",) + (("aligned_rank",) if c.aligned_k else ()),
    predicate=lambda p, c, inside: {} if c.aligned_max is None else {"aligned": p["aligned"].to_numpy() <= c.aligned_max},
    text=lambda c: [] if c.aligned_max is None else [
        f"aligned <= {c.aligned_max:g} (shift <= {c.max_shift}, {_zoom_text(c.scales)}{', flips too' if c.flips else ''})"
    ],
    settings={"aligned_k": _count(), "max_shift": _count(0, 8), "scales": _zooms, "aligned_max": _limit(2.0)},
)

_MIRROR = Rule(  # the aligned rule's limit on the mirrored query (flips=True); stated with the aligned rule
    "mirror",
    columns=lambda c: ("aligned_mirror",) if c.flips else (),
    predicate=lambda p, c, inside: {} if c.aligned_max is None or "aligned_mirror" not in p
    else {"mirror": p["aligned_mirror"].to_numpy() <= c.aligned_max},
    text=lambda c: [],
    settings={"flips": _switch},
)


def _ratio_fires(p: pd.DataFrame, c: DedupConfig, inside: np.ndarray) -> dict[str, np.ndarray]:
    if c.ratio_max is None or "aligned_ratio" not in p:
        return {}
    ratio, aligned = _col(p, "aligned_ratio"), p["aligned"].to_numpy()
    fires = ~inside & (aligned <= c.ratio_aligned_max) & (ratio <= c.ratio_max)
    if c.within_ratio_max is None:  # inside the set too, with the same limits
        fires |= inside & (aligned <= c.ratio_aligned_max) & (ratio <= c.ratio_max)
    else:
        fires |= inside & (aligned <= c.within_ratio_aligned_max) & (ratio <= c.within_ratio_max)
    return {"ratio": fires}


def _ratio_text(c: DedupConfig) -> list[str]:
    if c.ratio_max is None:
        return []
    text = f"aligned <= {c.ratio_aligned_max:g} with aligned_ratio <= {c.ratio_max:g}"
    if c.within_query and c.within_ratio_max is not None:
        text += (f" (inside the set: aligned <= {c.within_ratio_aligned_max:g} with aligned_ratio"
                 f" <= {c.within_ratio_max:g})")
    return [text]


_RATIO = Rule(
    "ratio",
    columns=lambda c: ("aligned_ratio",),
    predicate=_ratio_fires,
    text=_ratio_text,
    settings={"ratio_max": _limit(1.0), "ratio_aligned_max": _limit(2.0, "ratio"),
              "within_ratio_max": _limit(1.0), "within_ratio_aligned_max": _limit(2.0, "ratio")},
)

_TINY = Rule(
    "tiny",
    columns=lambda c: ("tiny", "tiny_rank"),
    predicate=lambda p, c, inside: {} if c.tiny_max is None else {"tiny": p["tiny"].to_numpy() <= c.tiny_max},
    text=lambda c: [] if c.tiny_max is None else [f"tiny <= {c.tiny_max:g}"],
    settings={"tiny_k": _count(), "tiny_size": _count(2), "tiny_max": _limit(2.0)},
)

_FEATURE = Rule(
    "feature",
    columns=lambda c: ("feature", "feature_rank") if c.feature_model is not None else (),
    predicate=lambda p, c, inside: {} if c.feature_max is None or "feature" not in p
    else {"feature": p["feature"].to_numpy() <= c.feature_max},
    text=lambda c: [] if c.feature_model is None or c.feature_max is None
    else [f"{c.feature_model} feature <= {c.feature_max:g}"],
    settings={"feature_model": _as_is, "feature_k": _count(), "feature_max": _limit(2.0)},
)


def _window_only(pairs: pd.DataFrame, config: DedupConfig) -> np.ndarray:
    """Candidate pairs that only the coarse-window search proposed: an ``aligned_rank``, no
    other rank, and no hash within its radius."""
    only = pairs["aligned_rank"].notna().to_numpy().copy()
    for col in RANK_COLUMNS:
        if col in pairs and col != "aligned_rank":
            only &= pairs[col].isna().to_numpy()
    for m, r in config.hash_radii.items():
        only &= ~(pairs[f"hamming_{m}"].to_numpy() <= r)
    return only


def _edge_fires(p: pd.DataFrame, c: DedupConfig, inside: np.ndarray) -> dict[str, np.ndarray]:
    if c.edge_max is None:
        return {}
    if "edge" not in p:
        raise fail("config.edge_max", c.edge_max, "None for a candidate table without an 'edge' column",
                   "Search again with edge_max set to compute it.")
    edge = _col(p, "edge")
    limit = np.full(len(p), c.edge_max)
    if c.within_edge_max is not None:
        limit[inside] = c.within_edge_max
    if c.window_edge_max is not None and "aligned_rank" in p:
        only = _window_only(p, c)
        limit[only] = np.minimum(limit[only], c.window_edge_max)
    fires = edge <= limit
    if c.edge_ratio_max is not None:
        if "edge_ratio" not in p:
            raise fail("config.edge_ratio_max", c.edge_ratio_max, "None for a candidate table without an "
                       "'edge_ratio' column", "Search again to compute it.")
        fires |= ~inside & (edge <= c.edge_ratio_edge_max) & (_col(p, "edge_ratio") <= c.edge_ratio_max)
    return {"edge": (p["aligned"].to_numpy() <= c.edge_aligned_max) & fires}


def _edge_text(c: DedupConfig) -> list[str]:
    if c.edge_max is None:
        return []
    text = (f"aligned <= {c.edge_aligned_max:g} with edge <= {c.edge_max:g} "
            f"(shift <= {c.edge_max_shift}, {_zoom_text(c.edge_scales)}")
    if c.within_query and c.within_edge_max is not None:
        text += f"; inside the set: edge <= {c.within_edge_max:g}"
    if c.aligned_k and c.window_edge_max is not None and c.window_edge_max < c.edge_max:
        text += f"; coarse-window candidates: edge <= {c.window_edge_max:g}"
    text += ")"
    if c.edge_ratio_max is not None:
        text += (f" or aligned <= {c.edge_aligned_max:g} with edge <= {c.edge_ratio_edge_max:g} and "
                 f"edge_ratio <= {c.edge_ratio_max:g}")
        if c.within_query:
            text += " (not inside the set)"
    return [text]


_EDGE = Rule(
    "edge",
    columns=lambda c: ("edge", "edge_ratio") if c.edge_max is not None else (),
    predicate=_edge_fires,
    text=_edge_text,
    settings={"edge_max": _limit(2.0), "edge_ratio_max": _limit(1.0), "edge_ratio_edge_max": _limit(2.0, "edge"),
              "within_edge_max": _limit(2.0), "window_edge_max": _limit(2.0), "edge_aligned_max": _limit(2.0, "edge"),
              "edge_max_shift": _count(0, 8), "edge_scales": _zooms},
)

def _descriptor_passes(p: pd.DataFrame, c: DedupConfig, inside: np.ndarray) -> dict[str, np.ndarray]:
    if c.descriptor_min is None:
        return {}
    if "descriptor_cos" not in p:
        raise fail("config.descriptor_min", c.descriptor_min, "None for a candidate table without a "
                   "'descriptor_cos' column", "Search again with descriptor_min set to compute it.")
    cos = np.nan_to_num(p["descriptor_cos"].to_numpy(dtype=float), nan=-np.inf)  # not computed: gated out
    return {"descriptor": cos >= c.descriptor_min}


_DESCRIPTOR = Rule(  # the verification gate: rules AND descriptor cosine >= descriptor_min
    "descriptor",
    columns=lambda c: ("descriptor_cos",) if c.descriptor_min is not None else (),
    predicate=_descriptor_passes,
    text=lambda c: [] if c.descriptor_min is None else [f"copydesc32 cosine >= {c.descriptor_min:g}"],
    settings={"descriptor_min": _cosine_min},
    gate=True,
)

RULES: tuple[Rule, ...] = (_HASH, _L2, _ALIGNED, _MIRROR, _RATIO, _TINY, _FEATURE, _EDGE, _DESCRIPTOR)
"""Every rule, in the order of the labels in ``flagged_by``, then the gates."""

_SEARCH_SETTINGS: dict[str, Check] = {"within_query": _switch}  # the one setting no rule owns
_CHECKS: dict[str, Check] = {**_SEARCH_SETTINGS, **{k: v for rule in RULES for k, v in rule.settings.items()}}
if set(_CHECKS) != {f.name for f in fields(DedupConfig)}:  # pragma: no cover - a rule or a field was added alone
    raise AssertionError(f"settings without a check, or checks without a field: {set(_CHECKS) ^ set(DedupConfig.__dataclass_fields__)}")


def _check_config(config: DedupConfig) -> DedupConfig:
    """Every setting checked (by its rule's check) and normalised."""
    return replace(config, **{f.name: _CHECKS[f.name](f.name, getattr(config, f.name), config) for f in fields(config)})


def _distance_columns(config: DedupConfig) -> list[str]:
    """The distance and rank columns of a candidate table under ``config``."""
    return list(dict.fromkeys(col for rule in RULES for col in rule.columns(config)))


def _flag_rules(
    pairs: pd.DataFrame, config: DedupConfig, within: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which rules fire for each pair; ``within`` marks pairs inside the query set, which
    use the ``within_*`` limits."""
    n = len(pairs)
    inside = np.zeros(n, bool) if within is None else np.asarray(within, bool)
    flagged = np.zeros(n, dtype=bool)
    labels = np.full(n, "", dtype=object)
    for rule in RULES:
        if rule.gate:
            continue
        for name, mask in rule.predicate(pairs, config, inside).items():
            flagged |= mask
            labels[mask] = [f"{x},{name}" if x else name for x in labels[mask]]
    flagged = _apply_gates(pairs, config, inside, flagged)
    labels[~flagged] = ""  # a pair a gate stops is not flagged by anything
    return flagged, labels.astype(str) if n else np.array([], dtype=str)


def _apply_gates(pairs: pd.DataFrame, config: DedupConfig, inside: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """``flagged`` AND every gate's verdict."""
    for rule in RULES:
        if rule.gate:
            for mask in rule.predicate(pairs, config, inside).values():
                flagged = flagged & mask
    return flagged


def _rules_text(config: DedupConfig) -> str:
    parts = [part for rule in RULES if not rule.gate for part in rule.text(config)]
    gates = [part for rule in RULES if rule.gate for part in rule.text(config)]
    text = " or ".join(parts) if parts else "(none)"
    return f"({text}) and {' and '.join(gates)}" if gates and parts else text
