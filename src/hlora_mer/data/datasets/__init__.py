"""Dataset loaders; importing this package registers them (it reads no files)."""

from hlora_mer.data.datasets import casme2, casme3, generic, megc2019, others, samm, smic  # noqa: F401
