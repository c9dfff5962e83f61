"""Offline, cached, once-per-clip face alignment (``hlora-mer preprocess``).

Modules: ``landmarks`` (detector backends behind one interface, imported lazily), ``align`` (one
similarity transform per clip), ``frames`` (reading and hashing source images), ``cache`` (the on-disk
cache and its manifest) and ``run`` (``preprocess_table``: sampling, detection, alignment, in parallel).
See ``docs/preprocessing.md``.
"""
