"""Applying a trained model: ``load`` (a checkpoint back to a model), ``predict`` (videos, frame folders
and datasets to predictions), ``explain`` (what the backbone and the fusion look at in one clip) and
``export`` (peft, merged and ONNX folders with a model card). See ``docs/predict.md`` and ``docs/export.md``."""
