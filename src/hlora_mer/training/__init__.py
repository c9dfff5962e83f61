"""Protocols as fold data (``splits``), fixed-budget training (``engine``), resumable fold runs (``runner``)
and the glue from an experiment's data config to torch Datasets (``data``). See ``docs/training.md``."""
