"""Offline, cached, once-per-clip face alignment (``hlora-mer preprocess``).

Modules: ``landmarks`` (detector backends behind one interface, imported lazily), ``align`` (one
similarity transform per clip), ``cache`` (the on-disk cache and its manifest) and ``run``
(``preprocess_table``: sampling, detection, alignment, in parallel). Source frames are read with
``hlora_mer.data.frames.read_frame_and_hash``, the package's one image reader. See ``docs/preprocessing.md``.
"""
