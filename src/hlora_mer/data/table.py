"""The canonical sample table: one row per micro-expression clip, whatever dataset it came from.

Every loader in ``hlora_mer.data`` returns a ``pandas.DataFrame`` with exactly these columns, and
everything downstream (preprocessing, folds, predictions, reports) keys samples on ``sample_id``.

=============  ==========  ===============================================================
column         dtype       meaning
=============  ==========  ===============================================================
dataset        str         registry name of the dataset (``casme2``, ``samm``, ``casme3``...)
subject        str         subject namespaced by dataset (``casme2/01``, ``samm/006``)
subject_raw    str         the subject as written in the annotation file (``01``, ``006``)
clip           str         the clip name as written in the annotation file (``EP02_01f``)
sample_id      str         unique across datasets (``casme2/01/EP02_01f``)
frame_paths    object      tuple of frame file paths, sorted by frame number; ``()`` for video
frame_numbers  object      tuple of int frame numbers, parallel to ``frame_paths``
video_path     str | None  a video file when the clip comes from video, else None
onset          int         first frame number of the expression (inclusive)
apex           Int64       apex frame number, <NA> where the annotation has none
offset         int         last frame number of the expression (inclusive)
emotion        str         native emotion label, as written by the dataset owner
fps            float       frame rate of the recording
=============  ==========  ===============================================================

For video clips, frame numbers refer to decoded frames (0-based).
"""

from __future__ import annotations

COLUMNS: tuple[str, ...] = (
    "dataset",
    "subject",
    "subject_raw",
    "clip",
    "sample_id",
    "frame_paths",
    "frame_numbers",
    "video_path",
    "onset",
    "apex",
    "offset",
    "emotion",
    "fps",
)
