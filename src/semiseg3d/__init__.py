"""semiseg3d: semi-supervised 3D medical image segmentation, reproducibly.

Dual-network method of Lu, Wu & Chaddad (arXiv 2509.13084) with a Snakemake + DVC pipeline.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
