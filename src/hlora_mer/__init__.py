"""hlora-mer: micro-expression recognition with DINOv2, high-level LoRA and hierarchical fusion.

Implements Shao et al., "High-level LoRA and hierarchical fusion for enhanced micro-expression
recognition" (HLoRA-MER, The Visual Computer, 2024). Importing this package has no side effects:
heavy modules (torch, transformers, peft, dlib, PyAV) are imported by the submodules that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
