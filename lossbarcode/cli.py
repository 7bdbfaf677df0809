"""Command-line interface: ``lossbarcode`` / ``python -m lossbarcode``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _bench_topology(args: argparse.Namespace) -> int:
    from lossbarcode.bench import print_rows, topology_benchmark

    sizes = tuple(int(s) for s in args.grid_sizes.split(","))
    rows = topology_benchmark(grid_sizes=sizes, knn_points=args.knn_points, repeat=args.repeat,
                              noise_size=args.noise_size)
    print_rows(rows, "H0 barcode: lossbarcode.graph_barcode vs ripser lower-star (best of "
               f"{args.repeat}; ratio = ours / ripser, < 1 is faster)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lossbarcode",
        description="Loss barcodes and TO-scores of neural-network loss landscapes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    which = bench.add_subparsers(dest="benchmark", required=True)
    topo = which.add_parser(
        "topology", help="grid/graph barcodes vs ripser on 2-D grids and a kNN graph"
    )
    topo.add_argument("--grid-sizes", default="101,501,1001",
                      help="comma list of 2-D grid side lengths (default: 101,501,1001)")
    topo.add_argument("--knn-points", type=int, default=100_000,
                      help="vertices of the kNN graph case (default: 100000)")
    topo.add_argument("--noise-size", type=int, default=1001,
                      help="side of the white-noise worst-case grid, 0 to skip (default 1001)")
    topo.add_argument("--repeat", type=int, default=3, help="best of this many runs (default 3)")
    topo.set_defaults(handler=_bench_topology)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as err:  # bad input: one line, no traceback
        print(f"lossbarcode: error: {err}", file=sys.stderr)
        return 2
