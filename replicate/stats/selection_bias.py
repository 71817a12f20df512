"""Selection-frequency bias of matched-histogram sampling (Engstrom et al. 2020), and its correction.

Engstrom, Ilyas, Santurkar, Tsipras, Steinhardt, Madry, "Identifying Statistical Bias in
Dataset Replication", ICML 2020 (arXiv:2005.09619). ImageNetV2's MatchedFrequency drew
candidates whose *observed* selection frequency ``k / n`` (``k`` of ``n`` annotators
selected the image) matched the original's histogram. The observed frequency is noisy;
the candidate pool's true frequencies are lower than the original's, so candidates with a
given observed frequency have, on average, a lower *true* frequency than original images
with the same observed one -- and models are less accurate on them. The naive gap
``acc_orig - acc_new`` then overstates the drop that would remain had the histograms of
the true frequencies been matched.

The target here (``corrected new-set accuracy``) is the new-set accuracy under that ideal
matching, with the same bins::

    T = sum_b P_orig(s in b) * E_pool[correct | s in b]

where ``s`` is an image's true selection probability. The corrected gap is
``acc_orig - T``. Two estimators:

- ``"mixture"``: beta-binomial mixture model. The true frequencies of the original and of
  the candidate pool are beta mixtures fitted by maximum likelihood to the vote counts
  (``scipy.optimize.minimize``, L-BFGS-B, analytic gradients); each model's accuracy on
  candidates is ``logit A(s) = alpha + beta * s``, fitted to the new set's correctness given
  its vote counts (posterior of ``s`` under the pool's mixture); ``T`` follows by
  integration. Intervals: delta method on the stacked estimating equations (sandwich).
- ``"jackknife"``: leave-annotators-out extrapolation. With ``m <= n`` annotators per image
  (every ``m``-subset, exactly, via the hypergeometric distribution of the votes) the
  plug-in accuracy of a histogram-matched set is ``theta(m)``; its bias shrinks like
  ``1/m``, so ``theta(m) = T + c/m`` is fitted over ``m`` in ``[n/2, n]`` and extrapolated
  to ``m -> infinity`` (a generalised jackknife). Needs the same ``n`` for every image.
  Intervals: percentile bootstrap over images (original, pool and new set resampled).

Assumptions (both): given its true frequency, an image's correctness is independent of its
votes; the new set is a random sample of the pool within each matched bin (as
:func:`replicate.sampling.sample_matched_histogram` draws it); one pooled frequency model
for all classes. The pool's votes are needed (the candidates the new set was drawn from).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

from replicate._results import Result
from replicate._results import json_safe as _json
from replicate._validation import check_choice, check_fraction, check_int, fail

if TYPE_CHECKING:  # pragma: no cover
    from replicate.sampling import SamplingResult

__all__ = [
    "BetaMixture",
    "SelectionBiasCorrection",
    "fit_beta_mixture",
    "selection_bias_correction",
    "correct_sampling_result",
    "SELECTION_BIAS_METHODS",
]

Method = Literal["mixture", "jackknife"]
SELECTION_BIAS_METHODS = ("mixture", "jackknife")
GRID_PER_BIN = 10


# --------------------------------------------------------------------------- vote tables


@dataclass(frozen=True)
class _Cells:
    """Images grouped by (annotators n, votes k): counts and, per model, correct counts."""

    n: np.ndarray
    k: np.ndarray
    total: np.ndarray
    correct: np.ndarray | None  # (models, cells)


def _votes(arg: str, votes: Any, annotators: Any) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(votes)
    if k.ndim != 1 or k.size == 0:
        raise fail(arg, votes, "a non-empty 1-D array of vote counts (how many annotators selected each image)")
    if k.dtype == bool or k.dtype.kind not in "iuf" or (k.dtype.kind == "f" and np.any(k != np.round(k))):
        raise fail(f"{arg}.dtype", str(k.dtype), "integer vote counts",
                   "Pass counts k of n annotators, not frequencies k/n.", error=TypeError)
    n = np.broadcast_to(np.asarray(annotators), k.shape) if np.ndim(annotators) == 0 else np.asarray(annotators)
    if n.shape != k.shape:
        raise fail(f"{arg} annotators", f"shape {n.shape}", f"one count per image {k.shape} (or one number)")
    if n.dtype == bool or n.dtype.kind not in "iuf" or np.any(n != np.round(n)):
        raise fail(f"{arg} annotators", n, "integer numbers of annotators", error=TypeError)
    k, n = k.astype(np.int64), n.astype(np.int64)
    if np.any(n < 1):
        raise fail(f"{arg} annotators", int(n[n < 1][0]), ">= 1")
    if np.any(k < 0):
        raise fail(arg, int(k[k < 0][0]), ">= 0")
    if np.any(k > n):
        i = int(np.flatnonzero(k > n)[0])
        raise fail(arg, int(k[i]), f"<= the number of annotators ({int(n[i])}) (image {i})",
                   "A vote count cannot exceed the number of annotators who saw the image.")
    return k, n


def _correct_matrix(arg: str, correct: Any, size: int, names: Sequence[str] | None
                    ) -> tuple[np.ndarray, tuple[str, ...]]:
    if isinstance(correct, Mapping):
        names = tuple(str(x) for x in correct)
        rows = [np.asarray(v) for v in correct.values()]
    elif isinstance(correct, Sequence) and correct and hasattr(correct[0], "correct"):
        names = tuple(str(r.model) for r in correct)
        rows = [np.asarray(r.correct) for r in correct]
    else:
        arr = np.asarray(correct)
        rows = [arr] if arr.ndim == 1 else list(arr)
    if not rows:
        raise fail(arg, "no models", "correctness of at least one model")
    mat = np.stack([np.asarray(r) for r in rows]) if len({np.shape(r) for r in rows}) == 1 else None
    if mat is None or mat.ndim != 2 or mat.dtype != bool:
        raise fail(arg, correct, "per-image correctness (bool), one row per model", error=TypeError)
    if mat.shape[1] != size:
        raise fail(f"{arg} images", mat.shape[1], f"{size}, the number of vote counts",
                   f"Found input variables with inconsistent numbers of samples: [{size}, {mat.shape[1]}].")
    if names is None:
        names = tuple(f"model{i}" for i in range(mat.shape[0]))
    names = tuple(str(x) for x in names)
    if len(names) != mat.shape[0]:
        raise fail("names", f"{len(names)} names", f"one per model ({mat.shape[0]})")
    return mat, names


def _cells(k: np.ndarray, n: np.ndarray, correct: np.ndarray | None) -> _Cells:
    key = n * (int(n.max()) + 1) + k
    uniq, inv = np.unique(key, return_inverse=True)
    total = np.bincount(inv, minlength=len(uniq)).astype(float)
    cc = None
    if correct is not None:
        cc = np.stack([np.bincount(inv, weights=row.astype(float), minlength=len(uniq)) for row in correct])
    nmax = int(n.max()) + 1
    return _Cells(uniq // nmax, uniq % nmax, total, cc)


# --------------------------------------------------------------------------- beta-binomial mixture


@dataclass(frozen=True)
class BetaMixture(Result):
    """A mixture of beta distributions of true selection probabilities: weights, a, b."""

    weights: tuple[float, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]
    log_likelihood: float = float("nan")

    @property
    def mean(self) -> float:
        return float(sum(w * a / (a + b) for w, a, b in zip(self.weights, self.a, self.b)))

    def cdf(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return sum(w * special.betainc(a, b, x) for w, a, b in zip(self.weights, self.a, self.b))

    def summary(self) -> str:
        parts = ", ".join(f"{w:.3f} Beta({a:.2f}, {b:.2f})" for w, a, b in zip(self.weights, self.a, self.b))
        return f"beta mixture: {parts}; mean {self.mean:.3f}"

    def to_dict(self) -> dict[str, Any]:
        return _json({"weights": self.weights, "a": self.a, "b": self.b, "log_likelihood": self.log_likelihood})


def _unpack(theta: np.ndarray, J: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.concatenate([theta[: J - 1], [0.0]])
    w = np.exp(v - v.max())
    w /= w.sum()
    a = np.exp(theta[J - 1 : 2 * J - 1])
    b = np.exp(theta[2 * J - 1 : 3 * J - 1])
    return w, a, b


def _logsumexp(x: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """log(sum(exp(x))) along ``axis`` (scipy.special.logsumexp without its per-call overhead)."""
    mx = np.max(x, axis=axis, keepdims=True)
    out = mx + np.log(np.sum(np.exp(x - mx), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _bb_log(k: np.ndarray, n: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log beta-binomial pmf, cells x components."""
    k, n = k[:, None], n[:, None]
    return (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
            + special.betaln(k + a, n - k + b) - special.betaln(a, b))


def _mixture_terms(theta: np.ndarray, J: int, c: _Cells) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell log-likelihood and per-cell score (cells x params)."""
    w, a, b = _unpack(theta, J)
    lp = _bb_log(c.k.astype(float), c.n.astype(float), a, b) + np.log(w)
    ll = _logsumexp(lp, axis=1)
    r = np.exp(lp - ll[:, None])
    k, n = c.k[:, None].astype(float), c.n[:, None].astype(float)
    common = special.digamma(a + b) - special.digamma(n + a + b)
    da = a * (special.digamma(k + a) - special.digamma(a) + common)
    db = b * (special.digamma(n - k + b) - special.digamma(b) + common)
    score = np.concatenate([(r - w)[:, : J - 1], r * da, r * db], axis=1)
    return ll, score


def _starts(c: _Cells, J: int) -> list[np.ndarray]:
    p = (c.k + 0.5) / (c.n + 1.0)
    order = np.argsort(p)
    cum = np.cumsum(c.total[order]) / c.total.sum()
    out = []
    for conc in (4.0, 12.0):
        qs = [(j + 0.5) / J for j in range(J)]
        means = [float(np.clip(p[order][np.searchsorted(cum, q)], 0.05, 0.95)) for q in qs]
        th = np.concatenate([np.zeros(J - 1), np.log([m * conc for m in means]),
                             np.log([(1 - m) * conc for m in means])])
        out.append(th)
    return out


def _fit_mixture(c: _Cells, J: int) -> tuple[np.ndarray, float]:
    tot = c.total

    def nll(th: np.ndarray) -> tuple[float, np.ndarray]:
        ll, sc = _mixture_terms(th, J, c)
        return float(-(tot @ ll)), -(tot @ sc)

    best = None
    bounds = [(-12, 12)] * (J - 1) + [(-6, 7)] * (2 * J)
    for th0 in _starts(c, J):  # the second start only when the first did not converge
        res = optimize.minimize(nll, th0, jac=True, method="L-BFGS-B", bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
        if best.success:
            break
    if best is None:  # _starts always gives one; kept as an error, not an assert (-O drops those)
        raise RuntimeError("the mixture fit had no starting point")
    return best.x, float(-best.fun)


def fit_beta_mixture(votes: Any, annotators: Any, *, n_components: int = 2) -> BetaMixture:
    """Maximum-likelihood beta mixture of true selection probabilities from ``k`` of ``n`` votes."""
    J = check_int("n_components", n_components, minimum=1, maximum=5)
    k, n = _votes("votes", votes, annotators)
    theta, ll = _fit_mixture(_cells(k, n, None), J)
    w, a, b = _unpack(theta, J)
    return BetaMixture(tuple(map(float, w)), tuple(map(float, a)), tuple(map(float, b)), ll)


# --------------------------------------------------------------------------- the mixture estimator


def _grid(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-cells of every bin: edges, midpoints, and the bin of each sub-cell."""
    sub = [np.linspace(edges[i], edges[i + 1], GRID_PER_BIN + 1)[:-1] for i in range(len(edges) - 1)]
    g_edges = np.concatenate(sub + [edges[-1:]])
    mids = 0.5 * (g_edges[1:] + g_edges[:-1])
    owner = np.repeat(np.arange(len(edges) - 1), GRID_PER_BIN)
    return g_edges, mids, owner


def _prior_mass(theta: np.ndarray, J: int, g_edges: np.ndarray) -> np.ndarray:
    w, a, b = _unpack(theta, J)
    cdf = special.betainc(a[:, None], b[:, None], g_edges[None, :])
    return w @ np.diff(cdf, axis=1)


def _posterior_mass(theta: np.ndarray, J: int, c: _Cells, g_edges: np.ndarray) -> np.ndarray:
    """P(s in grid cell | k, n) under the mixture, cells x grid."""
    w, a, b = _unpack(theta, J)
    lp = _bb_log(c.k.astype(float), c.n.astype(float), a, b) + np.log(w)
    r = np.exp(lp - _logsumexp(lp, axis=1, keepdims=True))  # cells x J
    ap = a[None, :, None] + c.k[:, None, None]
    bp = b[None, :, None] + (c.n - c.k)[:, None, None]
    cdf = special.betainc(ap, bp, g_edges[None, None, :])
    return np.einsum("cj,cjg->cg", r, np.diff(cdf, axis=2))


def _accuracy_curve(gamma: np.ndarray, mids: np.ndarray) -> np.ndarray:
    return special.expit(gamma[0] + gamma[1] * mids)


def _fit_gamma(post: np.ndarray, mids: np.ndarray, tot: np.ndarray, cor: np.ndarray) -> np.ndarray:
    def nll(g: np.ndarray) -> tuple[float, np.ndarray]:
        A = _accuracy_curve(g, mids)
        p = np.clip(post @ A, 1e-12, 1 - 1e-12)
        dA = A * (1 - A)
        dp = np.stack([post @ dA, post @ (dA * mids)], axis=1)
        wgt = cor / p - (tot - cor) / (1 - p)
        return float(-(cor @ np.log(p) + (tot - cor) @ np.log1p(-p))), -(wgt @ dp)

    p0 = float(np.clip(cor.sum() / tot.sum(), 0.01, 0.99))
    res = optimize.minimize(nll, np.array([special.logit(p0), 0.0]), jac=True, method="L-BFGS-B",
                            bounds=[(-30, 30), (-60, 60)])
    return res.x


def _gamma_scores(gamma: np.ndarray, post: np.ndarray, mids: np.ndarray, tot: np.ndarray, cor: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the correct and the wrong images of each cell (cells x 2 each)."""
    A = _accuracy_curve(gamma, mids)
    p = np.clip(post @ A, 1e-12, 1 - 1e-12)
    dA = A * (1 - A)
    dp = np.stack([post @ dA, post @ (dA * mids)], axis=1)
    return dp / p[:, None], -dp / (1 - p)[:, None]


def _target(theta_o: np.ndarray, theta_p: np.ndarray, gamma: np.ndarray, J: int, edges: np.ndarray,
            g_edges: np.ndarray, mids: np.ndarray, owner: np.ndarray) -> float:
    w, a, b = _unpack(theta_o, J)
    q = w @ np.diff(special.betainc(a[:, None], b[:, None], edges[None, :]), axis=1)
    mass = _prior_mass(theta_p, J, g_edges)
    A = _accuracy_curve(gamma, mids)
    num = np.bincount(owner, weights=mass * A, minlength=len(edges) - 1)
    den = np.bincount(owner, weights=mass, minlength=len(edges) - 1)
    return float(np.sum(q * num / np.maximum(den, 1e-300)))


def _num_jac(f: Any, x: np.ndarray, h: float = 1e-5, central: bool = True) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    cols = []
    f0 = None if central else np.asarray(f(x))
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h * max(1.0, abs(x[i]))
        if central:
            cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * e[i]))
        else:
            cols.append((np.asarray(f(x + e)) - f0) / e[i])
    return np.stack(cols, axis=-1)


@dataclass
class _MixtureFit:
    theta_o: np.ndarray
    theta_p: np.ndarray
    ll_o: float
    ll_p: float


def _mixture_estimates(co: _Cells, cp: _Cells, cn: _Cells, edges: np.ndarray, J: int, alpha: float
                       ) -> tuple[_MixtureFit, np.ndarray, np.ndarray, np.ndarray]:
    """Per model: corrected accuracy T, its standard error, and the gap's standard error."""
    theta_o, ll_o = _fit_mixture(co, J)
    theta_p, ll_p = _fit_mixture(cp, J)
    g_edges, mids, owner = _grid(edges)
    post = _posterior_mass(theta_p, J, cn, g_edges)
    d = 3 * J - 1
    _, s_o = _mixture_terms(theta_o, J, co)
    _, s_p = _mixture_terms(theta_p, J, cp)
    H_o = _num_jac(lambda t: co.total @ _mixture_terms(t, J, co)[1], theta_o)
    H_p = _num_jac(lambda t: cp.total @ _mixture_terms(t, J, cp)[1], theta_p)
    N_o = co.total.sum()
    models = cn.correct.shape[0]  # type: ignore[union-attr]
    T = np.empty(models)
    se_T = np.empty(models)
    se_gap = np.empty(models)
    tot_n = cn.total

    def gscore(g: np.ndarray, th_p: np.ndarray, cor_n: np.ndarray) -> np.ndarray:
        pst = post if th_p is theta_p else _posterior_mass(th_p, J, cn, g_edges)
        sc, sw = _gamma_scores(g, pst, mids, tot_n, cor_n)
        return cor_n @ sc + (tot_n - cor_n) @ sw

    def target(th_o: np.ndarray, th_p: np.ndarray, g: np.ndarray) -> float:
        return _target(th_o, th_p, g, J, edges, g_edges, mids, owner)

    for m in range(models):
        cor_n = cn.correct[m]  # type: ignore[index]
        gamma = _fit_gamma(post, mids, tot_n, cor_n)
        T[m] = target(theta_o, theta_p, gamma)
        A_nn = _num_jac(lambda g, c=cor_n: gscore(g, theta_p, c), gamma)
        # forward differences: each step recomputes every posterior (the costly part)
        A_np = _num_jac(lambda t, g=gamma, c=cor_n: gscore(g, t, c), theta_p, h=1e-6, central=False)
        # stacked estimating equations psi = (theta_o, mu_o, theta_p, gamma)
        size = d + 1 + d + 2
        Amat = np.zeros((size, size))
        Amat[:d, :d] = H_o
        Amat[d, d] = -N_o
        Amat[d + 1 : 2 * d + 1, d + 1 : 2 * d + 1] = H_p
        Amat[2 * d + 1 :, d + 1 : 2 * d + 1] = A_np
        Amat[2 * d + 1 :, 2 * d + 1 :] = A_nn
        cor_o = co.correct[m]  # type: ignore[index]
        mu = cor_o.sum() / N_o
        B = np.zeros((size, size))
        # original: images with c = 1 and c = 0 in each cell
        for cnt, resid in ((cor_o, 1 - mu), (co.total - cor_o, -mu)):
            g = np.concatenate([s_o, np.full((len(cnt), 1), resid)], axis=1)
            B[: d + 1, : d + 1] += (g * cnt[:, None]).T @ g
        B[d + 1 : 2 * d + 1, d + 1 : 2 * d + 1] = (s_p * cp.total[:, None]).T @ s_p
        sc, sw = _gamma_scores(gamma, post, mids, tot_n, cor_n)
        B[2 * d + 1 :, 2 * d + 1 :] = (sc * cor_n[:, None]).T @ sc + (sw * (tot_n - cor_n)[:, None]).T @ sw
        Ainv = np.linalg.pinv(Amat)
        V = Ainv @ B @ Ainv.T
        grad_T = np.zeros(size)
        grad_T[:d] = _num_jac(lambda t, g=gamma: target(t, theta_p, g), theta_o)
        grad_T[d + 1 : 2 * d + 1] = _num_jac(lambda t, g=gamma: target(theta_o, t, g), theta_p)
        grad_T[2 * d + 1 :] = _num_jac(lambda g: target(theta_o, theta_p, g), gamma)
        grad_gap = -grad_T.copy()
        grad_gap[d] = 1.0
        se_T[m] = float(np.sqrt(max(float(grad_T @ V @ grad_T), 0.0)))
        se_gap[m] = float(np.sqrt(max(float(grad_gap @ V @ grad_gap), 0.0)))
    return _MixtureFit(theta_o, theta_p, ll_o, ll_p), T, se_T, se_gap


# --------------------------------------------------------------------------- the jackknife estimator


def _hypergeom(n: int, m: int) -> np.ndarray:
    """(n+1, m+1): P(k' of m sub-sampled annotators selected | k of n did)."""
    k = np.arange(n + 1)[:, None]
    kp = np.arange(m + 1)[None, :]
    return sps.hypergeom.pmf(kp, n, k, m)


def _bin_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    nb = len(edges) - 1
    b = np.searchsorted(edges, values, side="right") - 1
    b[values == edges[-1]] = nb - 1
    b[(values < edges[0]) | (values > edges[-1])] = -1
    return b


def _membership(m: int, edges: np.ndarray) -> np.ndarray:
    b = _bin_of(np.arange(m + 1) / m, edges)
    out = np.zeros((m + 1, len(edges) - 1))
    ok = b >= 0
    out[np.flatnonzero(ok), b[ok]] = 1.0
    return out


def _fill(e: np.ndarray, have: np.ndarray) -> np.ndarray:
    """E[correct | k] where the new set has images at k; nearest observed k elsewhere (rows: replicates)."""
    size = e.shape[-1]
    idx = np.broadcast_to(np.arange(size), e.shape)
    left = np.maximum.accumulate(np.where(have, idx, -1), axis=-1)
    right = np.minimum.accumulate(np.where(have, idx, size)[..., ::-1], axis=-1)[..., ::-1]
    use_left = (right >= size) | ((left >= 0) & (idx - left <= right - idx))
    near = np.where(use_left, left, right)
    near = np.clip(near, 0, size - 1)
    return np.take_along_axis(e, near, axis=-1)


def _jackknife_theta(h_o: np.ndarray, h_p: np.ndarray, cor_n: np.ndarray, tot_n: np.ndarray,
                     mats: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """theta(m) for every m in ``mats``; inputs are (replicates, n+1) histograms. Returns (replicates, len(m))."""
    have = tot_n > 0
    e = _fill(np.where(have, cor_n / np.maximum(tot_n, 1), 0.0), have)
    h_o = h_o / h_o.sum(axis=1, keepdims=True)
    out = []
    for _, HM in mats:
        q = h_o @ HM
        num = (h_p * e) @ HM
        den = h_p @ HM
        out.append(np.sum(q * num / np.where(den > 0, den, np.inf), axis=1))
    return np.stack(out, axis=1)


def _extrapolate(theta: np.ndarray, ms: np.ndarray) -> np.ndarray:
    X = np.stack([np.ones(len(ms)), 1.0 / ms], axis=1)
    coef = np.linalg.lstsq(X, theta.T, rcond=None)[0]
    return coef[0]


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class SelectionBiasCorrection(Result):
    """Naive and selection-bias-corrected gaps per model, with intervals.

    ``accuracy_original`` / ``accuracy_new``: observed accuracies; ``naive_gap`` their
    difference. ``corrected_new[method]``: the estimate of the new-set accuracy had the true
    selection frequencies been matched (same bins); ``corrected_gap[method]`` =
    ``accuracy_original - corrected_new[method]``, with ``lower`` / ``upper`` bounds at level
    ``1 - alpha`` (mixture: delta method, ``se`` its standard error; jackknife: percentile
    bootstrap). ``bias[method]`` = ``naive_gap - corrected_gap[method]``.
    """

    names: tuple[str, ...]
    edges: tuple[float, ...]
    n_original: int
    n_pool: int
    n_new: int
    annotators: tuple[int, ...]
    accuracy_original: np.ndarray
    accuracy_new: np.ndarray
    methods: tuple[str, ...]
    corrected_new: Mapping[str, np.ndarray]
    corrected_gap: Mapping[str, np.ndarray]
    lower: Mapping[str, np.ndarray]
    upper: Mapping[str, np.ndarray]
    se: Mapping[str, np.ndarray]
    alpha: float = 0.05
    mixture_original: BetaMixture | None = None
    mixture_pool: BetaMixture | None = None
    n_components: int = 2
    n_bootstrap: int = 0
    jackknife_m: tuple[int, ...] = ()
    seed: int | None = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def naive_gap(self) -> np.ndarray:
        return self.accuracy_original - self.accuracy_new

    def bias(self, method: str = "mixture") -> np.ndarray:
        """naive gap - corrected gap: the part of the drop due to matching on noisy frequencies."""
        method = check_choice("method", method, self.methods)
        return self.naive_gap - self.corrected_gap[method]

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"model": name, "acc_orig": float(self.accuracy_original[i]),
                                   "acc_new": float(self.accuracy_new[i]), "naive_gap": float(self.naive_gap[i])}
            for m in self.methods:
                row[f"{m}_new"] = float(self.corrected_new[m][i])
                row[f"{m}_gap"] = float(self.corrected_gap[m][i])
                row[f"{m}_lower"] = float(self.lower[m][i])
                row[f"{m}_upper"] = float(self.upper[m][i])
                row[f"{m}_se"] = float(self.se[m][i])
            out.append(row)
        return out

    def summary(self) -> str:
        level = f"{100 * (1 - self.alpha):g}%"
        lines = [f"selection-frequency bias (Engstrom et al. 2020): {self.n_original} original, {self.n_pool} pool, "
                 f"{self.n_new} new images; {min(self.annotators)}-{max(self.annotators)} annotators; bins "
                 f"{', '.join(f'{e:g}' for e in self.edges)}"]
        if self.mixture_original is not None and self.mixture_pool is not None:
            lines.append(f"  beta mixtures ({self.n_components} components): mean true frequency original "
                         f"{self.mixture_original.mean:.3f}, pool {self.mixture_pool.mean:.3f}")
        width = max([5] + [len(n) for n in self.names])
        head = f"  {'model':<{width}}  {'naive gap pp':>12}"
        for m in self.methods:
            head += f"  {m + ' gap pp [' + level + ']':>30}"
        lines.append(head)
        for r in self.rows():
            s = f"  {r['model']:<{width}}  {100 * r['naive_gap']:12.2f}"
            for m in self.methods:
                s += f"  {100 * r[m + '_gap']:8.2f} [{100 * r[m + '_lower']:7.2f}, {100 * r[m + '_upper']:7.2f}]    "
            lines.append(s)
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return _json({
            "names": list(self.names), "edges": list(self.edges), "n_original": self.n_original,
            "n_pool": self.n_pool, "n_new": self.n_new, "annotators": list(self.annotators),
            "accuracy_original": self.accuracy_original, "accuracy_new": self.accuracy_new,
            "methods": list(self.methods),
            "corrected_new": dict(self.corrected_new), "corrected_gap": dict(self.corrected_gap),
            "lower": dict(self.lower), "upper": dict(self.upper), "se": dict(self.se), "alpha": self.alpha,
            "mixture_original": self.mixture_original, "mixture_pool": self.mixture_pool,
            "n_components": self.n_components, "n_bootstrap": self.n_bootstrap,
            "jackknife_m": list(self.jackknife_m), "seed": self.seed, "notes": list(self.notes),
            "models": self.rows(),
        })

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionBiasCorrection:
        def per(key: str) -> dict[str, np.ndarray]:
            return {m: np.asarray(v, dtype=float) for m, v in data[key].items()}

        def mix(key: str) -> BetaMixture | None:
            v = data.get(key)
            return None if v is None else BetaMixture(tuple(v["weights"]), tuple(v["a"]), tuple(v["b"]),
                                                      float("nan") if v.get("log_likelihood") is None
                                                      else float(v["log_likelihood"]))

        try:
            return cls(tuple(data["names"]), tuple(data["edges"]), int(data["n_original"]), int(data["n_pool"]),
                       int(data["n_new"]), tuple(data["annotators"]),
                       np.asarray(data["accuracy_original"], dtype=float), np.asarray(data["accuracy_new"], dtype=float),
                       tuple(data["methods"]), per("corrected_new"), per("corrected_gap"), per("lower"), per("upper"),
                       per("se"), float(data["alpha"]), mix("mixture_original"), mix("mixture_pool"),
                       int(data["n_components"]), int(data["n_bootstrap"]), tuple(data["jackknife_m"]),
                       data.get("seed"), tuple(data.get("notes", ())))
        except KeyError as e:
            raise fail("data", f"missing key {e.args[0]!r}", "a dict written by SelectionBiasCorrection.to_dict()") from None


# --------------------------------------------------------------------------- entry points


def _check_edges(edges: Any) -> np.ndarray:
    e = np.asarray(edges, dtype=float)
    if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0) or e[0] < 0 or e[-1] > 1:
        raise fail("edges", edges, "strictly increasing bin edges within [0, 1] (at least 2)",
                   "Pass the bins the new set was matched on, e.g. [0, 0.2, 0.4, 0.6, 0.8, 1].")
    return e


def selection_bias_correction(
    original_votes: Any,
    original_annotators: Any,
    correct_original: Any,
    pool_votes: Any,
    pool_annotators: Any,
    new_votes: Any,
    new_annotators: Any,
    correct_new: Any,
    *,
    edges: Any = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    names: Sequence[str] | None = None,
    methods: Sequence[str] = SELECTION_BIAS_METHODS,
    alpha: float = 0.05,
    n_components: int = 2,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
) -> SelectionBiasCorrection:
    """Naive and selection-bias-corrected gaps of a set matched on noisy selection frequencies.

    Parameters
    ----------
    original_votes, original_annotators
        per original image: ``k`` (annotators who selected it) and ``n`` (annotators asked; one
        number or one per image).
    correct_original, correct_new
        per-image correctness (bool): one row per model (array, a mapping model -> array, or
        evaluation results with ``.model`` and ``.correct``); same models in both.
    pool_votes, pool_annotators
        the votes of every candidate the new set was drawn from (the new set included).
    new_votes, new_annotators
        the new set's votes, in the order of ``correct_new``'s columns.
    edges
        the bins of the frequency ``k / n`` the new set was matched on.
    methods
        ``"mixture"`` and/or ``"jackknife"`` (see the module docstring).
    n_components
        beta components per mixture (mixture estimator).
    n_bootstrap, seed
        bootstrap replicates for the jackknife's percentile interval.
    names
        the models' names (``None``: from the results, else ``model0``, ...); one per model.
    alpha
        1 - the confidence level of the intervals.
    """
    from threadpoolctl import threadpool_limits

    # many tiny optimisations: BLAS threads only add overhead (L-BFGS-B is 10x slower with them)
    with threadpool_limits(limits=1):
        return _correction(original_votes, original_annotators, correct_original, pool_votes, pool_annotators,
                           new_votes, new_annotators, correct_new, edges, names, methods, alpha, n_components,
                           n_bootstrap, seed)


def _correction(original_votes: Any, original_annotators: Any, correct_original: Any, pool_votes: Any,
                pool_annotators: Any, new_votes: Any, new_annotators: Any, correct_new: Any, edges: Any,
                names: Sequence[str] | None, methods: Sequence[str], alpha: float, n_components: int,
                n_bootstrap: int, seed: int | None) -> SelectionBiasCorrection:
    alpha = check_fraction("alpha", alpha)
    edges = _check_edges(edges)
    methods = tuple(check_choice("methods", str(m), SELECTION_BIAS_METHODS) for m in methods)
    if not methods:
        raise fail("methods", methods, f"at least one of {SELECTION_BIAS_METHODS}")
    J = check_int("n_components", n_components, minimum=1, maximum=5)
    k_o, n_o = _votes("original_votes", original_votes, original_annotators)
    k_p, n_p = _votes("pool_votes", pool_votes, pool_annotators)
    k_n, n_n = _votes("new_votes", new_votes, new_annotators)
    c_o, names_o = _correct_matrix("correct_original", correct_original, len(k_o), names)
    c_n, names_n = _correct_matrix("correct_new", correct_new, len(k_n), names)
    if names_o != names_n:
        if sorted(names_o) != sorted(names_n):
            raise fail("correct_new models", list(names_n)[:5], f"the models of correct_original ({list(names_o)[:5]})",
                       "Pass the same models (rows) for both sets.")
        c_n = c_n[[names_n.index(m) for m in names_o]]
    co, cp, cn = _cells(k_o, n_o, c_o), _cells(k_p, n_p, None), _cells(k_n, n_n, c_n)
    acc_o = c_o.mean(axis=1)
    acc_n = c_n.mean(axis=1)
    z = sps.norm.ppf(1 - alpha / 2)
    out: dict[str, dict[str, np.ndarray]] = {key: {} for key in ("new", "gap", "lower", "upper", "se")}
    mix_o = mix_p = None
    notes: list[str] = []
    jk_m: tuple[int, ...] = ()
    B = 0
    if "mixture" in methods:
        fit, T, _se_T, se_gap = _mixture_estimates(co, cp, cn, edges, J, alpha)
        wo, ao, bo = _unpack(fit.theta_o, J)
        wp, ap, bp = _unpack(fit.theta_p, J)
        mix_o = BetaMixture(tuple(map(float, wo)), tuple(map(float, ao)), tuple(map(float, bo)), fit.ll_o)
        mix_p = BetaMixture(tuple(map(float, wp)), tuple(map(float, ap)), tuple(map(float, bp)), fit.ll_p)
        gap = acc_o - T
        out["new"]["mixture"], out["gap"]["mixture"], out["se"]["mixture"] = T, gap, se_gap
        out["lower"]["mixture"], out["upper"]["mixture"] = gap - z * se_gap, gap + z * se_gap
    if "jackknife" in methods:
        all_n = np.unique(np.concatenate([n_o, n_p, n_n]))
        if all_n.size != 1:
            raise fail("annotators", all_n.tolist(), "one number of annotators for every image with "
                       "method 'jackknife'", "Use methods=['mixture'], which allows any n per image.")
        n = int(all_n[0])
        if n < 3:
            raise fail("annotators", n, ">= 3 for the jackknife (it sub-samples annotators)")
        B = check_int("n_bootstrap", n_bootstrap, minimum=50)
        ms = np.arange(max(2, (n + 1) // 2), n + 1)
        jk_m = tuple(int(m) for m in ms)
        mats = [(int(m), _hypergeom(n, int(m)) @ _membership(int(m), edges)) for m in ms]
        hist = lambda k, w=None: np.bincount(k, weights=w, minlength=n + 1).astype(float)  # noqa: E731
        h_o, h_p, t_n = hist(k_o), hist(k_p), hist(k_n)
        rng = np.random.default_rng(seed)
        # bootstrap over images: the vote (and correctness) tables of each set are multinomial
        bh_p = rng.multinomial(len(k_p), h_p / h_p.sum(), size=B).astype(float)
        T_jk = np.empty(len(names_o))
        lo = np.empty(len(names_o))
        hi = np.empty(len(names_o))
        se = np.empty(len(names_o))
        for mi in range(len(names_o)):
            cor_o, cor = hist(k_o, c_o[mi].astype(float)), hist(k_n, c_n[mi].astype(float))
            th = _jackknife_theta(h_o[None], h_p[None], cor[None], t_n[None], mats)
            T_jk[mi] = _extrapolate(th, ms.astype(float))[0]
            tab_o = np.concatenate([cor_o, h_o - cor_o])
            tab_n = np.concatenate([cor, t_n - cor])
            bo = rng.multinomial(len(k_o), tab_o / tab_o.sum(), size=B).astype(float)
            bn = rng.multinomial(len(k_n), tab_n / tab_n.sum(), size=B).astype(float)
            bacc = bo[:, : n + 1].sum(axis=1) / len(k_o)
            bT = _extrapolate(_jackknife_theta(bo[:, : n + 1] + bo[:, n + 1 :], bh_p, bn[:, : n + 1],
                                               bn[:, : n + 1] + bn[:, n + 1 :], mats), ms.astype(float))
            bgap = bacc - bT
            lo[mi], hi[mi] = np.quantile(bgap, [alpha / 2, 1 - alpha / 2])
            se[mi] = float(np.std(bgap, ddof=1))
        gap = acc_o - T_jk
        out["new"]["jackknife"], out["gap"]["jackknife"], out["se"]["jackknife"] = T_jk, gap, se
        out["lower"]["jackknife"], out["upper"]["jackknife"] = lo, hi
    for d in out.values():
        for v in d.values():
            v.flags.writeable = False
    acc_o.flags.writeable = False
    acc_n.flags.writeable = False
    ann = tuple(int(x) for x in np.unique(np.concatenate([n_o, n_p, n_n])))
    return SelectionBiasCorrection(names_o, tuple(float(e) for e in edges), len(k_o), len(k_p), len(k_n), ann,
                                   acc_o, acc_n, methods, out["new"], out["gap"], out["lower"], out["upper"],
                                   out["se"], alpha, mix_o, mix_p, J, B, jk_m, seed, tuple(notes))


def correct_sampling_result(
    result: SamplingResult,
    original_votes: Any,
    original_annotators: Any,
    correct_original: Any,
    pool: Any,
    correct_new: Any,
    *,
    votes: str = "votes",
    annotators: str = "annotators",
    **kwargs: Any,
) -> SelectionBiasCorrection:
    """:func:`selection_bias_correction` for a set drawn by :func:`replicate.sampling.sample_matched_histogram`.

    The bins and the new set's images come from ``result`` (its ``allocation`` and
    ``testset``); the votes from the metadata columns ``votes`` and ``annotators`` of
    ``pool`` (the :class:`~replicate.imageset.ImageSet` the result was drawn from) and of
    the test set. ``correct_new`` is per-image correctness in ``result.testset`` order.

    Parameters
    ----------
    result
        the :class:`~replicate.sampling.SamplingResult` of ``sample_matched_histogram``.
    original_votes, original_annotators
        the original set's positive votes and annotators per image.
    correct_original
        per-model, per-image correctness on the original set.
    pool
        the image set the result was drawn from (with the ``votes``/``annotators`` columns).
    correct_new
        per-model, per-image correctness on ``result.testset``.
    votes, annotators
        the metadata columns holding the votes and the annotator counts.
    **kwargs
        keyword arguments of :func:`selection_bias_correction`.
    """
    from replicate.sampling import SamplingResult

    if not isinstance(result, SamplingResult):
        raise fail("result", type(result).__name__, "a SamplingResult of sample_matched_histogram", error=TypeError)
    if result.allocation.strategy != "matched_histogram" or result.testset is None:
        raise fail("result", result.method, "a matched-histogram result with its testset",
                   "Draw it with sample_matched_histogram(...); other strategies are not matched on frequencies.")
    edges = result.allocation.params.get("bins")
    for where, s in (("pool", pool), ("result.testset", result.testset)):
        meta = getattr(s, "metadata", None)
        if meta is None:
            raise fail(where, type(s).__name__, "an ImageSet with metadata", error=TypeError)
        for col in (votes, annotators):
            if col not in meta:
                raise fail(f"{where}.metadata[{col!r}]", "missing", "a per-image column of vote counts / "
                           "numbers of annotators", f"Columns: {', '.join(meta) or 'none'}; pass votes=... "
                           "and annotators=... with their names.", error=KeyError)
    ts = result.testset
    return selection_bias_correction(
        original_votes, original_annotators, correct_original,
        pool.metadata[votes], pool.metadata[annotators],
        ts.metadata[votes], ts.metadata[annotators], correct_new, edges=edges, **kwargs)
