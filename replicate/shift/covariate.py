"""Covariate shift in simple per-image statistics: KS tests and energy-distance permutation tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from replicate._results import Result
from replicate._results import json_safe as _json_safe
from replicate._validation import check_fraction, check_int, fail
from replicate.imageset import ImageSet
from replicate.shift.discriminate import _check_pair
from replicate.shift.features import image_statistics, phash_bits

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass(frozen=True, eq=False)
class CovariateShiftResult(Result):
    """Per-image statistics compared between two sets, one row per statistic.

    ``table`` columns: ``statistic``, ``mean_a``, ``mean_b``, ``sd_a``, ``sd_b``,
    ``cohens_d`` (mean difference b - a over the pooled sd), ``ks`` (the KS
    statistic, itself an effect size in [0, 1]), ``ks_p`` (two-sided, scipy
    ``ks_2samp``, all images), ``energy`` (energy distance, scipy
    ``energy_distance``, all images, in the statistic's units), ``energy_p``
    (permutation p-value on a subsample of at most ``energy_n`` per set), and
    ``ks_p_holm`` / ``energy_p_holm`` adjusted over the statistics (Holm).

    ``hash_bits``: pHash bit balance. For each of the 64 bits, the fraction of
    images with the bit set in each set (a balanced hash has 0.5 everywhere);
    ``statistic`` is the sum over bits of the squared difference in frequency,
    with a permutation p-value; effect sizes are the mean and the largest absolute
    difference in bit frequency.
    """

    name_a: str
    name_b: str
    n_a: int
    n_b: int
    table: pd.DataFrame = field(repr=False)
    hash_bits: Mapping[str, Any] = field(default_factory=dict, repr=False)
    permutations: int = 200
    energy_n: int = 1000
    alpha: float = 0.05
    params: Mapping[str, Any] = field(default_factory=dict)

    def differing(self) -> list[str]:
        """Statistics whose energy-distance test rejects at ``alpha`` (Holm-adjusted)."""
        return self.table[self.table["energy_p_holm"] < self.alpha]["statistic"].tolist()

    def summary(self) -> str:
        """The table as text, with a one-line verdict."""
        sig = self.differing()
        head = (
            f"Covariate shift {self.name_a!r} (n={self.n_a}) vs {self.name_b!r} (n={self.n_b}): "
            + (f"differ in {', '.join(sig)}" if sig else "no statistic differs")
            + f" at alpha={self.alpha} (energy-distance permutation test, Holm-adjusted)"
        )
        cols = ["statistic", "mean_a", "mean_b", "cohens_d", "ks", "ks_p", "energy", "energy_p"]
        lines = [head, self.table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")]
        hb = self.hash_bits
        if hb:
            lines.append(
                f"pHash bit balance: mean |freq_a - freq_b| {hb['mean_abs_diff']:.4f}, max "
                f"{hb['max_abs_diff']:.4f} (bit {hb['max_bit']}), p = {hb['p_value']:.4g} "
                f"({hb['permutations']} permutations, {hb['n_a']} + {hb['n_b']} images)"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: the table as a list of rows, the hash-bit test, and the parameters."""
        return {
            "name_a": self.name_a,
            "name_b": self.name_b,
            "n_a": int(self.n_a),
            "n_b": int(self.n_b),
            "permutations": int(self.permutations),
            "energy_n": int(self.energy_n),
            "alpha": self.alpha,
            "tests": "ks: scipy.stats.ks_2samp (two-sided); energy: scipy.stats.energy_distance "
            "with a permutation p-value (subsample); Holm adjustment over statistics",
            "table": _json_safe(self.table.to_dict(orient="records")),
            "hash_bits": _json_safe(dict(self.hash_bits)),
            "differing": self.differing(),
            "params": _json_safe(dict(self.params)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CovariateShiftResult:
        """Rebuild from :meth:`to_dict` output (the table from its rows, ``None`` back to NaN)."""
        import pandas as pd

        if not isinstance(data, Mapping):
            raise fail("data", data, "a mapping (the to_dict() of a CovariateShiftResult)", error=TypeError)
        missing = [k for k in ("name_a", "name_b", "n_a", "n_b", "table") if k not in data]
        if missing:
            raise fail("data", sorted(data)[:8], f"a CovariateShiftResult dict with the keys {', '.join(missing)}",
                       "Pass the to_dict() output of the same replicate version.")
        table = pd.DataFrame.from_records(list(data["table"])).fillna(np.nan)
        return cls(
            name_a=str(data["name_a"]), name_b=str(data["name_b"]), n_a=int(data["n_a"]), n_b=int(data["n_b"]),
            table=table, hash_bits=dict(data.get("hash_bits") or {}),
            permutations=int(data.get("permutations", 200)), energy_n=int(data.get("energy_n", 1000)),
            alpha=float(data.get("alpha", 0.05)), params=dict(data.get("params") or {}),
        )


def _group_matrix(n: int, na: int, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Indicator matrix (n, 1 + permutations) of group a: observed first, then shuffles."""
    z = np.zeros((n, 1 + permutations))
    z[:na, 0] = 1
    for p in range(1, permutations + 1):
        z[rng.permutation(n)[:na], p] = 1
    return z


def _energy_permutation(xa: np.ndarray, xb: np.ndarray, permutations: int, rng: np.random.Generator
                        ) -> tuple[float, float]:
    """Squared energy distance of two 1-D samples and its permutation p-value.

    ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (the square of scipy's
    ``energy_distance``). With the pooled distance matrix ``D`` and group
    indicators as columns of ``Z``, every permutation's within/between sums come
    from ``Z' D Z``: all permutations in a few matrix products.
    """
    x = np.concatenate([xa, xb])
    na, nb = len(xa), len(xb)
    d = np.abs(x[:, None] - x[None, :])
    z = _group_matrix(len(x), na, permutations, rng)
    saa = np.einsum("np,np->p", z, d @ z)  # sum over a x a
    rowsum = d.sum(axis=1)
    sab = z.T @ rowsum - saa  # sum over a x b
    sbb = rowsum.sum() - 2 * sab - saa
    e = 2 * sab / (na * nb) - saa / (na * na) - sbb / (nb * nb)
    p = (1 + np.sum(e[1:] >= e[0] - 1e-12)) / (1 + permutations)
    return float(e[0]), float(p)


def _hash_bit_test(ba: np.ndarray, bb: np.ndarray, permutations: int, rng: np.random.Generator
                   ) -> dict[str, Any]:
    bits = np.concatenate([ba, bb]).astype(np.float64)
    na, nb = len(ba), len(bb)
    z = _group_matrix(len(bits), na, permutations, rng)
    ones_a = bits.T @ z  # (64, P)
    ones_b = bits.sum(axis=0)[:, None] - ones_a
    diff = ones_a / na - ones_b / nb
    stat = (diff**2).sum(axis=0)
    fa, fb = ba.mean(axis=0), bb.mean(axis=0)
    absdiff = np.abs(fa - fb)
    return {
        "n_a": int(na),
        "n_b": int(nb),
        "freq_a": fa.tolist(),
        "freq_b": fb.tolist(),
        "balance_a": float(np.mean(np.abs(fa - 0.5))),
        "balance_b": float(np.mean(np.abs(fb - 0.5))),
        "statistic": float(stat[0]),
        "mean_abs_diff": float(absdiff.mean()),
        "max_abs_diff": float(absdiff.max()),
        "max_bit": int(absdiff.argmax()),
        "p_value": float((1 + np.sum(stat[1:] >= stat[0] - 1e-12)) / (1 + permutations)),
        "permutations": int(permutations),
    }


def covariate_shift(
    a: ImageSet,
    b: ImageSet,
    *,
    permutations: int = 200,
    energy_n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    hash_bits: bool = True,
) -> CovariateShiftResult:
    """Compare per-image statistics of two sets with two-sample tests.

    Statistics: see :func:`image_statistics`. For each: a Kolmogorov-Smirnov test on
    all images (scipy), and an energy-distance test with a permutation p-value on a
    random subsample of at most ``energy_n`` images per set (the pooled distance
    matrix is ``(2 * energy_n)^2``). Effect sizes: Cohen's d, the KS statistic, and
    the energy distance. With ``hash_bits``, the pHash bit frequencies of the same
    subsamples are compared too (see :class:`CovariateShiftResult`).

    The smallest permutation p-value is ``1 / (permutations + 1)``; for it to survive
    the Holm adjustment over the 7 statistics at ``alpha = 0.05``, use at least 140
    permutations (the default 200 does).

    Parameters
    ----------
    a, b
        the two image sets (same image shape).
    permutations
        permutations of each energy-distance and hash-bit test.
    energy_n
        images per set in the permutation tests' subsample.
    seed
        the seed of the subsample and the permutations.
    alpha
        the level of :meth:`CovariateShiftResult.differing`.
    hash_bits
        also compare the pHash bit frequencies.
    """
    import pandas as pd
    from scipy.stats import energy_distance, ks_2samp
    from statsmodels.stats.multitest import multipletests

    _check_pair(a, b)
    permutations = check_int("permutations", permutations, minimum=1)
    energy_n = check_int("energy_n", energy_n, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    alpha = check_fraction("alpha", alpha)
    for name, s in (("a", a), ("b", b)):
        if len(s) < 2:
            raise fail(f"len({name})", len(s), ">= 2 images for a two-sample test",
                       f"Set {s.name!r} has {len(s)}.")
    rng = np.random.default_rng(seed)
    fa = image_statistics(a)
    fb = image_statistics(b)
    sub_a = np.sort(rng.permutation(len(a))[:energy_n])
    sub_b = np.sort(rng.permutation(len(b))[:energy_n])
    rows = []
    for stat in fa.columns:
        va, vb = fa[stat].to_numpy(), fb[stat].to_numpy()
        ks = ks_2samp(va, vb)
        sd_pooled = np.sqrt(((len(va) - 1) * va.var(ddof=1) + (len(vb) - 1) * vb.var(ddof=1))
                            / (len(va) + len(vb) - 2))
        _, e_p = _energy_permutation(va[sub_a], vb[sub_b], permutations, rng)
        rows.append(
            {
                "statistic": stat,
                "mean_a": float(va.mean()),
                "mean_b": float(vb.mean()),
                "sd_a": float(va.std(ddof=1)),
                "sd_b": float(vb.std(ddof=1)),
                "cohens_d": float((vb.mean() - va.mean()) / sd_pooled) if sd_pooled > 0 else 0.0,
                "ks": float(ks.statistic),
                "ks_p": float(ks.pvalue),
                "energy": float(energy_distance(va, vb)),
                "energy_p": e_p,
            }
        )
    table = pd.DataFrame(rows)
    table["ks_p_holm"] = multipletests(table["ks_p"], method="holm")[1]
    table["energy_p_holm"] = multipletests(table["energy_p"], method="holm")[1]
    bits: dict[str, Any] = {}
    hasher = None
    if hash_bits:
        ba, hasher = phash_bits(a.select(sub_a))
        bb, _ = phash_bits(b.select(sub_b))
        bits = _hash_bit_test(ba, bb, permutations, rng)
        bits["hasher"] = hasher
    return CovariateShiftResult(
        name_a=a.name,
        name_b=b.name,
        n_a=len(a),
        n_b=len(b),
        table=table,
        hash_bits=bits,
        permutations=permutations,
        energy_n=energy_n,
        alpha=alpha,
        params={"seed": seed, "hasher": hasher, "energy_subsample": [int(len(sub_a)), int(len(sub_b))]},
    )
