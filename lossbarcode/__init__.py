"""lossbarcode: loss barcodes and TO-scores of neural-network loss landscapes.

The pipeline is a straight line of small modules:

    data -> models -> landscape -> minima -> paths -> topology -> plots

Only the topology core is imported here; the torch-based stages are imported on demand
(``from lossbarcode import minima``) so that ``import lossbarcode`` stays fast.
"""

from lossbarcode.topology import (
    Barcode,
    barcode_distance,
    graph_barcode,
    grid_barcode,
    minima_barcode,
    sample_barcode,
    sublevel_components,
    sublevel_sweep,
    to_score,
)

__version__ = "0.1.0"

__all__ = [
    "Barcode",
    "barcode_distance",
    "graph_barcode",
    "grid_barcode",
    "minima_barcode",
    "sample_barcode",
    "sublevel_components",
    "sublevel_sweep",
    "to_score",
]
