"""What the owners' annotation files mean: label schemes (``labels``), action-unit codes and objective
classes (``action_units``), composites of several datasets (``composites``) and the differences between
two versions of a dataset's annotations (``diff``). See ``docs/datasets.md``."""
