"""Statistics of the accuracy drop between an original test set and a new one.

Everything here works from counts (``correct`` out of ``n``) and, where available,
per-image correctness, and wraps statsmodels and scipy:

- :func:`accuracy_ci` — binomial intervals (Clopper-Pearson, Wilson, Jeffreys) via
  ``statsmodels.stats.proportion.proportion_confint``.
- :func:`gap_ci` — the drop ``acc_orig - acc_new`` of two independent test sets with an
  interval (Newcombe's hybrid score method or Agresti-Caffo, via
  ``confint_proportions_2indep``), a score test (``test_proportions_2indep``) and a
  multiple-comparison adjustment over models (``multipletests``; Holm by default).
- :func:`mcnemar_test` — two models on the same images (exact McNemar test).
- :func:`group_drops` — per-class or per-keyword drops, as a :class:`GapCI` over groups.
- :func:`linear_fit` — new vs original accuracy on a probit (default), logit or linear
  scale; OLS (statsmodels) or errors-in-variables (York's weighted Deming regression with
  binomial variances on both axes), confidence and prediction bands mapped back to
  accuracy, bootstrap intervals for slope and intercept.
- :func:`effective_robustness` — distance of each model above the fitted line.
- :func:`rank_stability` — Kendall's tau and Spearman's rho with bootstrap intervals.
- :func:`diagnose` — what the numbers say about adaptive overfitting, in words.
- :func:`agreement_on_the_line` — ALine-S / ALine-D (Baek et al. 2022): a new set's accuracy from
  original accuracies and model-pair agreements alone, with the method's own check.
- :func:`selection_bias_correction` — the selection-frequency bias of matched-histogram sampling
  (Engstrom et al. 2020): beta-binomial mixture and jackknife corrections of the gap;
  :func:`correct_sampling_result` for a :func:`replicate.sampling.sample_matched_histogram` result.
- :func:`human_label_accuracy` — accuracy against human majority and soft labels (e.g. CIFAR-10H
  votes) and the share of errors on contested images; :func:`label_noise_adjusted_gap`.
- :func:`compare` — all of the above for many models at once, as one :class:`Comparison`;
  :func:`compare_predictions` — the same from a published prediction file, per new set.

Modules: :mod:`~replicate.stats.intervals` (accuracy and gap intervals, McNemar, p-value
adjustment), :mod:`~replicate.stats.fit` (the scale transform, the line, effective
robustness), :mod:`~replicate.stats.ranks`, :mod:`~replicate.stats.diagnose` and
:mod:`~replicate.stats.compare`, :mod:`~replicate.stats.agreement`,
:mod:`~replicate.stats.selection_bias`, :mod:`~replicate.stats.human_labels`; every public name is importable from ``replicate.stats``.

Conventions: the *gap* is ``acc_orig - acc_new`` (positive = the model lost accuracy
on the new set); accuracies are fractions in [0, 1]; ``alpha = 0.05`` means 95%
intervals. On the probit and logit scales an accuracy of exactly 0 or 1 has no finite
value: such points are clipped to ``[0.5/n, 1 - 0.5/n]`` (``n`` = that set's size) and
the rule is stored in the result (``LinearFit.boundary_rule``, ``LinearFit.clipped``);
without ``n`` the fit refuses them with an error.
"""

from __future__ import annotations

from replicate.stats._common import (
    ADJUST_METHODS,
    BOOTSTRAPS,
    BOUNDARY_RULE,
    FIT_METHODS,
    GAP_METHODS,
    INTERVAL_METHODS,
    SCALES,
    AdjustMethod,
    Bootstrap,
    FitMethod,
    GapMethod,
    IntervalMethod,
    Scale,
)
from replicate.stats.agreement import (
    AgreementLine,
    agreement_from_predictions,
    agreement_on_the_line,
    pairwise_agreement,
)
from replicate.stats.compare import Comparison, compare, compare_predictions, prediction_set_name
from replicate.stats.diagnose import Diagnosis, diagnose
from replicate.stats.fit import (
    EffectiveRobustness,
    LinearFit,
    effective_robustness,
    inverse_transform,
    linear_fit,
    transform,
)
from replicate.stats.human_labels import (
    HumanLabelAccuracy,
    LabelNoiseGap,
    human_label_accuracy,
    human_majority,
    label_noise_adjusted_gap,
)
from replicate.stats.intervals import (
    AccuracyCI,
    GapCI,
    McNemarResult,
    accuracy_ci,
    adjust_pvalues,
    gap_ci,
    group_drops,
    interval_coverage,
    mcnemar_test,
)
from replicate.stats.ranks import RankStability, rank_stability
from replicate.stats.selection_bias import (
    SELECTION_BIAS_METHODS,
    BetaMixture,
    SelectionBiasCorrection,
    correct_sampling_result,
    fit_beta_mixture,
    selection_bias_correction,
)

__all__ = [
    "AccuracyCI",
    "GapCI",
    "McNemarResult",
    "LinearFit",
    "EffectiveRobustness",
    "RankStability",
    "Diagnosis",
    "Comparison",
    "AgreementLine",
    "BetaMixture",
    "SelectionBiasCorrection",
    "HumanLabelAccuracy",
    "LabelNoiseGap",
    "accuracy_ci",
    "gap_ci",
    "mcnemar_test",
    "group_drops",
    "adjust_pvalues",
    "interval_coverage",
    "linear_fit",
    "effective_robustness",
    "rank_stability",
    "diagnose",
    "compare",
    "compare_predictions",
    "prediction_set_name",
    "agreement_on_the_line",
    "agreement_from_predictions",
    "pairwise_agreement",
    "selection_bias_correction",
    "correct_sampling_result",
    "fit_beta_mixture",
    "SELECTION_BIAS_METHODS",
    "human_label_accuracy",
    "human_majority",
    "label_noise_adjusted_gap",
    "transform",
    "inverse_transform",
    "INTERVAL_METHODS",
    "GAP_METHODS",
    "ADJUST_METHODS",
    "SCALES",
    "FIT_METHODS",
    "BOOTSTRAPS",
    "BOUNDARY_RULE",
    "IntervalMethod",
    "GapMethod",
    "AdjustMethod",
    "Scale",
    "FitMethod",
    "Bootstrap",
]

