"""Figures of a run folder and of one clip (paper Fig. 3-6, confusion matrices, per-subject scores, losses).

``figures`` draws from a run's files (no model needed); ``explain`` runs a trained model on a clip to show
what its backbone and its inter-frame fusion look at. matplotlib (the ``viz`` extra) is imported only when
a figure is drawn; each figure is written as PNG and PDF with fixed metadata, so drawing it again from the
same files gives the same bytes. What each figure shows: ``docs/figures.md``.
"""
