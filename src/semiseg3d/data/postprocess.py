"""Optional post-processing of predicted masks.

The paper's code applies none (spec 6.1, section 8), so everything here is off by default
and only runs when asked (``semiseg3d evaluate --lcc``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["CONNECTIVITY", "largest_connected_component"]

#: neighbourhood size -> scipy ``generate_binary_structure`` connectivity for 3-D.
CONNECTIVITY: dict[int, int] = {6: 1, 18: 2, 26: 3}


def largest_connected_component(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Keep only the largest connected foreground component of a binary mask.

    The default, 26-connectivity (voxels touching by a face, an edge or a corner belong to
    the same component), is the one of ``skimage.measure.label`` that the
    ``getLargestCC`` helpers of the UA-MT / MC-Net family use.

    Args:
        mask: (X, Y, Z) binary mask (any dtype; nonzero = foreground).
        connectivity: 6, 18 or 26 neighbours.

    Returns:
        (X, Y, Z) mask of ``mask``'s dtype with the largest component kept (value 1) and
        everything else 0. When two components tie for the largest, the one whose first
        voxel comes first in C (x, y, z raster) order is kept. An empty mask is returned as
        an all-zero copy.

    Raises:
        ValueError: for a connectivity other than 6, 18 or 26 or a non-3-D mask.
    """
    if connectivity not in CONNECTIVITY:
        raise ValueError(f"connectivity must be one of 6, 18, 26, got {connectivity}")
    if mask.ndim != 3:
        raise ValueError(f"expected a 3-D mask (X, Y, Z), got shape {mask.shape}")
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY[connectivity])
    labels, n = ndimage.label(mask != 0, structure=structure)
    out = np.zeros_like(mask)
    if n == 0:
        return out
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    sizes[0] = 0
    out[labels == int(np.argmax(sizes))] = 1
    return out
