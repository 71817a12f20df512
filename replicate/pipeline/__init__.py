"""End to end: candidate pool -> new test set -> evaluation -> comparison -> report.

``build_testset(config)`` loads the original test and train sets and the candidate
pool, finds near-duplicates of the pool in the originals and within the pool, turns the
original's keyword counts into an allocation, samples the new test set and writes it
with its manifest. ``evaluate_and_report(config)`` evaluates the chosen zoo models on the
original and the new set, compares them, re-analyses published prediction files, runs
the dataset test, and renders the reports. ``run(config)`` does both.

The package, in the order a run goes through it:

- :mod:`~replicate.pipeline.config`: the TOML schema as frozen dataclasses
  (:class:`PipelineConfig`), checked once, before anything is loaded or written;
- :mod:`~replicate.pipeline.outdir`: the output directory (one run at a time under a
  lock; ``--overwrite`` removes only what replicate wrote);
- :mod:`~replicate.pipeline.stages`: cached, resumable stages keyed by config, inputs
  and the source of the code they run;
- :mod:`~replicate.pipeline.build`: the ``dedup`` and ``sample`` stages;
- :mod:`~replicate.pipeline.analysis`: the ``evaluate``, ``compare``, ``shift`` and
  ``report`` stages.

(There is no submodule ``run``: ``replicate.pipeline.run`` is the function.)
Example configs live in ``configs/``; the schema is in ``docs/pipeline.md``.
"""

from __future__ import annotations

from replicate.pipeline.analysis import RunOutput, evaluate_and_report, run
from replicate.pipeline.build import BuildOutput, build_testset, demo_config
from replicate.pipeline.config import PipelineConfig, config_from_dict, load_config
from replicate.pipeline.outdir import OutputDirBusy
from replicate.pipeline.stages import StageInfo

__all__ = [
    "build_testset",
    "evaluate_and_report",
    "run",
    "demo_config",
    "BuildOutput",
    "RunOutput",
    "PipelineConfig",
    "load_config",
    "config_from_dict",
    "OutputDirBusy",
    "StageInfo",
]
