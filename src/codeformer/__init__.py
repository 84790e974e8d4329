"""codeformer: blind face restoration with the CodeFormer method (Zhou et al., NeurIPS 2022)."""

__version__ = "0.1.0"
