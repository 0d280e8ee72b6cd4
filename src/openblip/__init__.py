"""openblip: a complete, fast, faithful implementation of BLIP (Li et al., ICML 2022, arXiv:2201.12086)."""

__version__ = "0.1.0"
