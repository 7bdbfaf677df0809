"""Command-line interface: ``lossbarcode`` / ``python -m lossbarcode``.

Subcommands: ``run``, ``sweep``, ``list``, ``show``, ``export``, ``views``, ``bench``, ``app``.
Bad input (flags, config files, results folders, files to write) exits with status 2 and a
one-line reason on stderr, never a traceback; warnings are one line each too.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import re
import shlex
import sys
import tomllib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossbarcode import choices
from lossbarcode.config import ExperimentConfig, field_help

# Flags whose name differs from the config field.
FLAG_NAMES = {"k": "minima"}


def reproduce_command(config: ExperimentConfig, command: str = "run") -> str:
    """The ``lossbarcode`` command that recomputes ``config`` (non-default flags only)."""
    defaults = ExperimentConfig()
    flags = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value == getattr(defaults, f.name):
            continue
        flags.append(_flag(f.name) if isinstance(value, bool) and value
                     else f"{_flag(f.name)} {'none' if value is None else value}")
    return " ".join(["lossbarcode", command, *flags])



CONFIG_SUFFIXES = (".json", ".toml")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _value_type(kind: str):
    """The argparse ``type`` of a config field annotated ``kind`` ("int | None", ...); named
    so argparse says "invalid int value: 'x'"."""
    optional = "None" in kind
    base = kind.split("|")[0].strip()

    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null", ""):
            return None
        return {"int": int, "float": float}.get(base, str)(text)

    parse.__name__ = base
    return parse


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("experiment (defaults: the ExperimentConfig defaults)")
    for f in dataclasses.fields(ExperimentConfig):
        kind = str(f.type)
        if kind == "bool":  # a switch: given means True
            group.add_argument(f"--{FLAG_NAMES.get(f.name, f.name).replace('_', '-')}",
                               dest=f"cfg_{f.name}", action="store_const", const=True,
                               default=None, help=field_help(f.name))
            continue
        group.add_argument(
            f"--{FLAG_NAMES.get(f.name, f.name).replace('_', '-')}", dest=f"cfg_{f.name}",
            type=_value_type(kind), default=None,
            metavar=kind.split(" ")[0].upper(),
            help=field_help(f.name))


def read_config_file(path: Path) -> dict[str, Any]:
    """The field values in a JSON or TOML config file; ``ValueError`` naming the file (and the
    field) for anything else: a missing file, a folder, a special file or one larger than
    :data:`~lossbarcode.choices.MAX_CONFIG_BYTES`, another format, bytes that are not UTF-8
    text, a document that is not an object or is nested too deep, values of the wrong type."""
    from lossbarcode.store import FileRefusedError, parse_json, read_regular_file

    if path.is_dir():
        raise ValueError(f"config file {path} is a directory, not a file")
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ValueError(f"config file {path}: unsupported format {path.suffix or '(none)'!r}; "
                         f"use JSON (.json) or TOML (.toml)")
    try:
        raw = read_regular_file(path, choices.MAX_CONFIG_BYTES)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except FileRefusedError as err:
        raise ValueError(f"config file {err}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not UTF-8 text (a binary file?)") from None
    try:
        values = (tomllib.loads(text) if path.suffix.lower() == ".toml"
                  else parse_json(raw, allow_constants=True))
    except RecursionError:  # tomllib parses nested tables recursively
        raise ValueError(f"config file {path} is nested too deep") from None
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"config file {path} is not valid {path.suffix[1:]}: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold an object of field: value pairs, got "
                         f"{type(values).__name__} {str(values)[:40]}")
    try:
        ExperimentConfig.from_dict(values)  # types and names first, per file
    except ValueError as err:
        raise ValueError(f"config file {path}: {err}") from None
    return values


def _flag(name: str) -> str:
    """The command-line flag of config field ``name``."""
    return "--" + FLAG_NAMES.get(name, name).replace("_", "-")


def _config_from(args: argparse.Namespace) -> ExperimentConfig:
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values = read_config_file(Path(args.config))
    flags = []
    for f in dataclasses.fields(ExperimentConfig):
        flag = getattr(args, f"cfg_{f.name}")
        if flag is not None:
            values[f.name] = flag
            flags.append(f.name)
    try:
        return ExperimentConfig.from_dict(values)
    except ValueError as err:
        # Name the flags the user typed, not the config's field names.
        message = str(err)
        for name in flags:
            message = re.sub(rf"\b{name}\b", _flag(name), message)
        raise ValueError(message) from None


def _store(args: argparse.Namespace):
    from lossbarcode.store import ResultStore

    return ResultStore(args.results)


def _refuse_beyond_a_day(configs: Sequence[ExperimentConfig], store, yes: bool,
                         what: str) -> None:
    """Refuse (``ValueError``) the runs of ``configs`` not yet finished in ``store`` when the
    cost model, calibrated on the store's verified runs, expects them to take longer than
    :data:`~lossbarcode.choices.CONFIRM_BEYOND_S` together, unless ``yes`` (``--yes``); one
    that cannot fit in memory first (``cost.check_fits``)."""
    if yes:
        return
    from lossbarcode.cost import check_fits, device_kind, estimate_cost, store_calibration
    from lossbarcode.datafiles import missing_files

    seconds = 0.0
    for config in configs:
        # Finished: loading it costs nothing. No data: it fails on that, the more useful error.
        if store.exists(config.run_id) or missing_files(config.dataset, config.data_root):
            continue
        check_fits(config)  # a run that cannot fit says so, whatever its duration
        calibration = store_calibration(store, device_kind(config), like=config)
        seconds += estimate_cost(config, calibration)["seconds"]
    if seconds > choices.CONFIRM_BEYOND_S:
        raise ValueError(f"{what} is estimated to take about {seconds / 3600:,.0f} h on this "
                         f"machine (the cost model; off by a few times either way), more than "
                         f"{choices.CONFIRM_BEYOND_S / 3600:g} h: pass --yes to start it "
                         "anyway, or make it smaller")


def _progress_bars(quiet: bool):
    """A progress callback drawing one tqdm bar (with ETA) per stage on stderr."""
    if quiet:
        return None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int, message: str) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="step", leave=True,
                                     file=sys.stderr)
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if stage == "result":
            for b in bars.values():
                b.close()

    return progress


def _cmd_run(args: argparse.Namespace) -> int:
    from lossbarcode.experiment import run_experiment

    config = _config_from(args)
    store = _store(args)
    _refuse_beyond_a_day([config], store, args.yes, f"run {config.run_id}")
    _data_notice(config, args.quiet)
    result = run_experiment(config, store, progress=_progress_bars(args.quiet),
                            lock_timeout=args.lock_timeout,
                            on_wait=(lambda message: None) if args.quiet else _say)
    if not args.quiet:
        print(f"TO-score ({config.score_variant}): {result.score:.6g}   minima: {result.k}   "
              f"stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
        print(result.certification_note())
        print(f"health: {_health_line(result)}")
    print(result.run_id)
    return 0


def _data_notice(config: ExperimentConfig, quiet: bool) -> None:
    """Say on stderr where the data is read from when it is not the data folder the config
    names (Fashion-MNIST from Debian's package); the run records it too (``data_source``)."""
    from lossbarcode.datafiles import data_source, system_copy

    if not quiet and system_copy(config.dataset, config.data_root) is not None:
        _say(f"data: {config.dataset} from {data_source(config.dataset, config.data_root)}")


def _health_line(result) -> str:
    """The run's health in one line (lossbarcode.health, the dashboard's source too)."""
    from lossbarcode.health import run_health

    found = run_health(result)
    return found.summary() + "".join(f"\n  {p.severity}: {p.message}" for p in found.problems)


def _say(message: str) -> None:
    print(f"lossbarcode: {message}", file=sys.stderr, flush=True)


def _ints(text: str | None, flag: str) -> list[int] | None:
    """A comma-list flag's integers (None when the flag is not given)."""
    from lossbarcode.sweep import axis_values

    return None if text is None else axis_values(text, flag)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from lossbarcode.sweep import summarize, sweep, sweep_records, write_sweep_file

    config = _config_from(args)
    _data_notice(config, args.quiet)
    widths, depths, seeds = (_ints(args.widths, "--widths"), _ints(args.depths, "--depths"),
                              _ints(args.seeds, "--seeds"))
    from lossbarcode.sweep import AXES, sweep_configs

    try:  # before anything is computed, with the axis named as its flag (--seeds: ...)
        configs = sweep_configs(config, widths, depths, seeds, args.design)
    except ValueError as err:
        message = str(err)
        raise ValueError("--" + message if message.startswith(AXES) else message) from None
    _refuse_beyond_a_day(configs, _store(args), args.yes, f"this sweep of {len(configs)} runs")
    if args.output:
        from lossbarcode.store import check_output_path

        check_output_path(args.output)  # before the sweep computes anything
        if args.append and Path(args.output).is_file():
            _check_append(Path(args.output))
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(desc="runs", unit="run", file=sys.stderr)

    def progress(done: int, total: int, cfg: ExperimentConfig) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.set_postfix_str(f"width {cfg.width} depth {cfg.depth} seed {cfg.seed}")
            bar.refresh()

    results = sweep(config, widths=widths, depths=depths, seeds=seeds, store=_store(args),
                    progress=progress, design=args.design, lock_timeout=args.lock_timeout,
                    **_executor_options(args))
    if bar is not None:
        bar.close()
    if args.output:
        command = "lossbarcode " + shlex.join(args.argv)
        records = write_sweep_file(Path(args.output), results, command, append=args.append)
    else:
        records = sweep_records(results)
    rows = summarize(records)
    print(_table([{k: v for k, v in r.items() if k not in ("to_score_seeds", "seeds")}
                  for r in rows]))
    from lossbarcode.sweep import curve_ready

    left = [r for r in records if not curve_ready(r)]
    if left:
        print(f"{len(left)} runs left out of the summary (broken, or fewer than 90% of their "
              "minima certified: their numbers measure the training, not the network): "
              + "; ".join(f"{r['run_id']} {r.get('minima_certified', '?')}/{r['k']} minima "
                          f"certified, {r['health']}" for r in left))
    return 0


def _names_list(text: str) -> list[str]:
    return [v for v in text.replace(" ", "").split(",") if v]


def _writable_folder(folder: Path) -> None:
    """Refuse a report folder that cannot be written, before anything is computed."""
    probe = folder / ".lossbarcode-write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--output: cannot write the report into {folder} "
                         f"({err.strerror or err}); choose another folder") from None


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from lossbarcode import reproduce

    extra = {k: v for k, v in (("data_root", args.data_root), ("device", args.device)) if v}
    settings = reproduce.plan(args.scale, _names_list(args.archs), _names_list(args.datasets),
                              **extra)
    store = _store(args)
    cost = reproduce.plan_cost(settings)
    done = sum(store.exists(c.run_id) for s in settings for c in s.configs())  # a glance
    _say(f"reproduce --scale {args.scale}: {len(settings)} settings, {cost['runs']} runs "
         f"({done} already in {store.root}); the cost model estimates "
         f"{cost['seconds'] / 60:.0f} min for all of them on this machine, peak memory "
         f"{cost['memory'] / 2**20:.0f} MiB per run (off by a few times either way)")
    if args.estimate:
        print(_table([{"setting": r["setting"], "runs": r["runs"], "minutes": r["seconds"] / 60}
                      for r in cost["settings"]]))
        return 0
    output = Path(args.output) if args.output else (reproduce.reports_folder()
                                                     / f"reproduce-{args.scale}")
    _writable_folder(output)
    if not args.report_only:
        _refuse_beyond_a_day([c for s in settings for c in s.configs()], store, args.yes,
                             f"reproduce --scale {args.scale}")
    skipped: dict[str, str] = {}
    if not args.report_only:
        def progress(setting, n: int, total: int, config: ExperimentConfig) -> None:
            if not args.quiet:
                _say(f"{setting.name}: run {n}/{total} done (width {config.width} depth "
                     f"{config.depth} seed {config.seed})")

        skipped = reproduce.run(settings, store, progress=progress,
                                lock_timeout=args.lock_timeout, **_executor_options(args))
        for name, why in skipped.items():
            _say(f"{name}: skipped: {why}")
    command = "lossbarcode " + shlex.join(args.argv)
    report = reproduce.measure(settings, store, args.scale, command, skipped)
    paths = reproduce.write_report(report, output)
    print(_table(reproduce.verdict_table(report)))
    print(f"report: {', '.join(str(p) for p in paths)}")
    return 0


def _check_append(path: Path) -> None:
    """Refuse ``--append`` to a file that is not a sweep file, before computing anything."""
    from lossbarcode.sweep import read_sweep_file

    try:
        read_sweep_file(path)
    except ValueError as err:
        hint = ("; give another --output or drop --append"
                if "not a lossbarcode sweep file" in str(err) else "")
        raise ValueError(f"--append: {err}{hint}") from None


def parse_sweep_command(command: str) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The base config and grid axes (``widths``, ``depths``, ``seeds``, ``design``: the
    keyword arguments of :func:`lossbarcode.sweep.sweep`) of a ``lossbarcode sweep ...``
    command line, e.g. one a sweep file records. ``ValueError`` for another command; bad flags
    exit as the command line would (``SystemExit``)."""
    words = shlex.split(command)
    if "sweep" not in words:
        raise ValueError(f"not a 'lossbarcode sweep' command: {command!r}")
    args = build_parser().parse_args(words[words.index("sweep"):])
    axes: dict[str, Any] = {name: _ints(getattr(args, name), f"--{name}")
                            for name in ("widths", "depths", "seeds")}
    axes["design"] = args.design
    return _config_from(args), axes


def _print_rows(rows: list[dict], title: str) -> None:
    """Benchmark rows under a title, floats to 4 decimals."""
    print(title)
    if rows:
        print(_table(rows, ".4f"))


def _table(rows: Sequence[dict[str, Any]], float_format: str = ".5g") -> str:
    """The rows as an aligned text table (columns: every key, in order of first use; a row
    without a key shows "-")."""
    if not rows:
        return "(nothing)"
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        return f"{v:{float_format}}" if isinstance(v, float) else "-" if v is None else str(v)

    cells = [[cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) for c in cells]
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    from lossbarcode.experiment import load_result
    from lossbarcode.store import CorruptResultError, NewerFormatError, UnsafeResultError

    store = _store(args)
    rows = []
    for run_id in store.list():
        try:
            result = load_result(store, run_id, strict=True)
        except UnsafeResultError as err:
            rows.append({"run_id": run_id, "status": f"unusable: {err.path} {err.reason}; "
                                                     "remove it by hand"})
            continue
        except CorruptResultError as err:  # one bad run must not hide the others
            rows.append({"run_id": run_id, "status": f"unusable result ({err.reason}); "
                                                     "'lossbarcode run' recomputes it"})
            continue
        except NewerFormatError:
            rows.append({"run_id": run_id, "status": "made by a newer lossbarcode"})
            continue
        except (ValueError, OSError) as err:  # e.g. unreadable folder: still only this run
            rows.append({"run_id": run_id, "status": f"unusable ({_one_line(err)})"})
            continue
        if result is None:
            rows.append({"run_id": run_id, "status": "partial: " + ",".join(
                store.stages(run_id))})
            continue
        from lossbarcode.health import run_health

        c = result.config
        minima, k = result.minima_count
        bars, finite = result.certified
        rows.append({"run_id": run_id, "status": "done", "dataset": c.dataset, "arch": c.arch,
                     "width": c.width, "depth": c.depth, "k": result.k, "seed": c.seed,
                     "method": c.path_method, "align": c.align, "to_score": result.score,
                     "certified": f"{minima}/{k} minima, {bars}/{finite} bars",
                     "health": run_health(result).summary()})
    print(_table(rows) if rows else f"no runs in {store.root}")
    return 0


def _load(args: argparse.Namespace):
    from lossbarcode.experiment import load_result

    store = _store(args)
    result = load_result(store, args.run, strict=True)
    if result is None:
        raise ValueError(f"no finished run {args.run!r} in {store.root} "
                         "(see 'lossbarcode list')")
    return result


def _cmd_show(args: argparse.Namespace) -> int:
    result = _load(args)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    c = result.config
    print(f"run {result.run_id}: {c.dataset} {c.arch} width {c.width} depth {c.depth}, "
          f"K={result.k}, {c.path_method} paths ({c.pairs} pairs), {result.n_params} parameters")
    print(f"TO-score ({result.config.score_variant}, bars at certified minima): "
          f"{result.score:.6g}")
    print("  " + "  ".join(f"{k}={v:.4g}" for k, v in result.scores.items()))
    print("  all minima: " + "  ".join(f"{k}={v:.4g}" for k, v in result.scores_all.items()))
    print(result.certification_note())
    if note := result.resolution_note():
        print(note)
    print(f"health: {_health_line(result)}")
    g = result.generalization
    if g.get("spearman") is not None:
        print(f"segment length vs test error: Spearman {g['spearman']:.3f} "
              f"(p={g['p_value']:.3g}, {g['method']} permutation test over "
              f"{g['n_permutations']:,} permutations, n={g['n']})")
    elif g.get("n") is not None:
        print(f"segment length vs test error: undefined (n={g['n']}: a rank test needs 3 "
              "minima with varied finite segments; lengths within the resolution tie at 0)")
    print(f"paths: {result.paths_note()}")
    if result.data_source:
        print(f"data: {result.data_source}")
    _print_identical(result)
    _print_rebasin(_store(args), result)
    print()
    print(_table(result.bar_table()))
    print()
    print(_table(result.minima_table()))
    print()
    print(_table(result.path_table()))
    return 0


def _print_identical(result) -> None:
    """The pairs of minima that make identical test predictions (not merged: see README)."""
    pairs = result.identical_predictions
    if pairs is None:
        return
    print("identical test predictions: " + ("none" if not pairs else "; ".join(
        f"minima {p['pair'][0]} and {p['pair'][1]} (largest output difference "
        f"{p['max_output_difference']:.3g})" for p in pairs)))


def _print_rebasin(store, result) -> None:
    """Before/after re-basin, side by side, when the run's twin (align flipped) is there."""
    from lossbarcode.experiment import rebasin_pair, rebasin_table, twin_run_id

    unaligned, aligned = rebasin_pair(store, result)
    if unaligned is None or aligned is None:
        flag = "without --align" if result.config.align else "with --align"
        print(f"re-basin: the same run {flag} ({twin_run_id(result)}) is not in this results "
              "folder; run it to compare before and after alignment")
        return
    print(f"re-basin: before (unaligned {unaligned.run_id}) and after (aligned "
          f"{aligned.run_id}) permuting every minimum onto minimum "
          f"{aligned.alignment.get('reference')}:")
    print(_table(rebasin_table(unaligned, aligned)))


def _cmd_export(args: argparse.Namespace) -> int:
    result = _load(args)
    if args.format == "json":
        text = json.dumps(result.to_dict(), indent=1)
    else:
        rows = result.minima_table()
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    if args.output:
        from lossbarcode.store import atomic_write_bytes

        atomic_write_bytes(args.output, text.encode("utf-8"))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _cmd_views(args: argparse.Namespace) -> int:
    from lossbarcode.views import make_default_views

    store = _store(args)

    def note(what: str) -> None:
        if not args.quiet:
            print(f"{what} ...", file=sys.stderr, flush=True)

    for request, seconds in make_default_views(store, args.run, progress=note):
        print(f"{request.describe()}: {seconds:.2f} s")
    print(f"the default views of run {args.run} are stored in {store.root / args.run}")
    return 0


def _cmd_app(args: argparse.Namespace) -> int:
    import subprocess

    app = Path(__file__).resolve().parents[1] / "app.py"
    if not app.is_file():
        raise ValueError(f"app.py not found next to the package ({app}); run the app from a "
                         "clone of the repository: streamlit run app.py")
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port",
               str(args.port)]
    if args.headless:
        command += ["--server.headless", "true"]
    return subprocess.call(command, cwd=app.parent)


def _bench_topology(args: argparse.Namespace) -> int:
    from lossbarcode.bench.topology import topology_benchmark

    sizes = tuple(int(s) for s in args.grid_sizes.split(","))
    rows = topology_benchmark(grid_sizes=sizes, knn_points=args.knn_points, repeat=args.repeat,
                              noise_size=args.noise_size)
    _print_rows(rows, "H0 barcode: lossbarcode.graph_barcode vs ripser lower-star (best of "
               f"{args.repeat}; ratio = ours / ripser, < 1 is faster)")
    return 0


def _bench_experiment(args: argparse.Namespace) -> int:
    from lossbarcode.bench.experiment import BUSY_TARGET, busy_benchmark, experiment_benchmark

    if args.busy:
        rows = busy_benchmark(_config_from(args),
                              progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        _print_rows(rows, "Experiment stages on the machine as it is (idle) and with one "
                    "competing process spinning a pure-Python loop on one core at the nice "
                    "shown (busy); target: a job's slowdown against a competitor of its own "
                    f"priority <= {BUSY_TARGET:g}x (a job yields to normal priority by design)")
        return 0
    rows = experiment_benchmark(_config_from(args), repeat=args.repeat)
    _print_rows(rows, "Default experiment: cold (empty results folder) vs cached (finished "
               "run re-opened)")
    return 0


def _bench_convergence(args: argparse.Namespace) -> int:
    from lossbarcode.bench.convergence import ABS_SLACK, CASES, convergence_benchmark

    families = tuple(f for f in args.families.split(",") if f)
    unknown = sorted(set(families) - set(CASES))
    if unknown:
        raise ValueError(f"--families: unknown {unknown}; choose from {','.join(CASES)}")
    rows = convergence_benchmark(families, k=args.minima, factor=args.factor,
                                 progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"Per pair: barrier excess (barrier - higher endpoint) of the default paths against "
          f"its restarts, the string method and NEB with {args.factor}x the step caps; target: "
          f"default <= best + max(path_tol x segment, {ABS_SLACK:g}); paths optimised and "
          "seconds on each family's first row")
    print(_table(rows, ".3g"))
    return 0


def _bench_engine(args: argparse.Namespace) -> int:
    from lossbarcode.bench.engine import engine_benchmark, print_engine_benchmark

    widths = tuple(_ints(args.widths, "--widths") or (32,))
    rows = engine_benchmark(device=args.device, widths=widths,
                            repeats=args.repeats, parts=tuple(args.parts.split(",")),
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print_engine_benchmark(rows)
    return 0


def _bench_estimate(args: argparse.Namespace) -> int:
    from lossbarcode.bench.estimate import estimate_benchmark, print_estimate_benchmark

    rows = estimate_benchmark(tuple(p for p in args.presets.split(",") if p),
                              progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print_estimate_benchmark(rows)
    return 0


def _bench_app(args: argparse.Namespace) -> int:
    from lossbarcode.bench.app import app_benchmark, print_app_benchmark

    print_app_benchmark(app_benchmark(runs=args.runs))
    return 0


def _bench_load(args: argparse.Namespace) -> int:
    from lossbarcode.bench.load import load_benchmark, print_load_benchmark

    rows = load_benchmark(sessions=args.sessions, rounds=args.rounds, page=args.page)
    print_load_benchmark(rows)
    return 0


def _bench_first_open(args: argparse.Namespace) -> int:
    from lossbarcode.bench.first_open import first_open_benchmark, print_first_open_benchmark

    print_first_open_benchmark(first_open_benchmark(
        app_root=Path(args.app) if args.app else None))
    return 0


def _bench_toy(args: argparse.Namespace) -> int:
    from lossbarcode.bench.toy import print_toy_benchmark, toy_benchmark

    print_toy_benchmark(toy_benchmark(toys=tuple(args.toys.split(",")), rounds=args.rounds))
    return 0


def _bench_minima(args: argparse.Namespace) -> int:
    from lossbarcode.bench.minima import method_benchmark, training_benchmark

    def note(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    training = training_benchmark(k=args.minima, progress=note) if args.part in (
        "all", "training") else []
    methods = method_benchmark(k=args.minima, progress=note) if args.part in (
        "all", "methods") else []
    if training:
        _print_rows(training, f"Minima: new default training vs the old one (K per case, seed "
                    f"0; certified: gradient <= {choices.MINIMA_TOL:g}, smallest Hessian "
                    f"eigenvalue >= -{choices.MINIMA_TOL:g}, learned, not diverged)")
    if methods:
        _print_rows(methods, "Full-batch phase from the same minibatch-phase result, to the "
                    "same tolerance and cap (evaluations: K-row batched calls, or one "
                    "network's calls summed over networks for the per-network loop)")
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError(text)
    return value


_seconds.__name__ = "seconds (>= 0)"


def _add_executor_flags(parser: argparse.ArgumentParser) -> None:
    """Where the runs of a sweep or a reproduction are computed."""
    parser.add_argument("--executor", choices=choices.EXECUTORS, default="local",
                        help="local (in process, default), ray (needs lossbarcode[ray]) or "
                             "submitit (one job per run: Slurm, else local processes; needs "
                             "lossbarcode[slurm])")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster address for ray.init (default: start a local "
                             "instance)")
    parser.add_argument("--ray-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up connecting to Ray after this long (default 30)")
    parser.add_argument("--submitit-cluster", choices=["slurm", "local", "debug"],
                        default=None, help="force submitit's cluster (default: Slurm when "
                                           "it is there, else local processes)")
    parser.add_argument("--slurm-partition", default=None, help="Slurm partition of the jobs")
    parser.add_argument("--slurm-gpus", type=int, default=None, metavar="N",
                        help="GPUs per Slurm job (default none)")
    parser.add_argument("--job-minutes", type=int, default=None, metavar="MIN",
                        help="time limit of each submitit job (submitit's default if unset)")


def _executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`lossbarcode.sweep.sweep` that the executor flags set."""
    parameters = {key: value for key, value in (("slurm_partition", args.slurm_partition),
                                                ("gpus_per_node", args.slurm_gpus),
                                                ("timeout_min", args.job_minutes))
                  if value is not None}
    if args.executor != "submitit" and (parameters or args.submitit_cluster):
        raise ValueError("--submitit-cluster, --slurm-partition, --slurm-gpus and "
                         "--job-minutes need --executor submitit")
    return {"executor": args.executor, "ray_address": args.ray_address,
            "ray_timeout": args.ray_timeout, "submitit_cluster": args.submitit_cluster,
            "submitit_parameters": parameters}


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_count.__name__ = "count (an integer >= 1)"


def _add_yes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-y", "--yes", action="store_true",
                        help="start even when the cost model expects more than "
                             f"{choices.CONFIRM_BEYOND_S / 3600:g} h (refused without it)")


def _add_lock_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lock-timeout", type=_seconds, default=None, metavar="SECONDS",
                        help="when another process is computing the same run, wait at most "
                             "this long for it (default: wait until it finishes)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog="lossbarcode",
        description="Loss barcodes and TO-scores of neural-network loss landscapes.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_results(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--results", metavar="DIR", default=None,
                       help="results folder (default $LOSSBARCODE_RESULTS or ./results)")
        return p

    run = with_results(sub.add_parser(
        "run", help="run one experiment (prints its run id last)",
        description="Run one experiment: train K minima, connect them, compute the barcode "
                    "and TO-score. A finished run is loaded, an interrupted one resumed."))
    run.add_argument("--config", metavar="FILE", help="JSON or TOML config; flags override it")
    run.add_argument("-q", "--quiet", action="store_true", help="print only the run id")
    _add_yes(run)
    _add_lock_timeout(run)
    _add_config_flags(run)
    run.set_defaults(handler=_cmd_run)

    sw = with_results(sub.add_parser(
        "sweep", help="run a widths x depths x seeds grid and print TO-score per scale",
        description="Run every width x depth x seed combination of a base config (finished "
                    "runs are loaded) and print TO-score mean/std and test error per scale."))
    sw.add_argument("--widths", help="comma list, e.g. 4,8,16,32")
    sw.add_argument("--depths", help="comma list, e.g. 1,2,3")
    sw.add_argument("--seeds", help="comma list, e.g. 0,1,2")
    sw.add_argument("--design", choices=["grid", "cross"], default="grid",
                    help="grid: every width x depth (default); cross: every width at the base "
                         "--depth, then every depth at the base --width")
    sw.add_argument("--output", metavar="FILE",
                    help="also write records, summary and barcodes as JSON (the format of "
                         "assets/demo_sweep.json, which the Scaling page reads)")
    sw.add_argument("--append", action="store_true",
                    help="merge into an existing --output file instead of replacing it")
    sw.add_argument("--config", metavar="FILE", help="base config (JSON or TOML)")
    sw.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_yes(sw)
    _add_executor_flags(sw)
    _add_lock_timeout(sw)
    _add_config_flags(sw)
    sw.set_defaults(handler=_cmd_sweep)

    rep = with_results(sub.add_parser(
        "reproduce", help="test the paper's two findings and write a report with verdicts",
        description="Run the width and depth curves and the within-run generalization test of "
                    "arXiv:2012.15834 for each family and dataset (stored, resumable runs), "
                    "then write report.html, report.md and report.json with a verdict per "
                    "claim and setting."))
    rep.add_argument("--scale", choices=list(choices.REPRODUCE_SCALES),
                     default=choices.REPRODUCE_SCALE,
                     help=f"how big (default {choices.REPRODUCE_SCALE}); the cost is printed "
                          "first")
    rep.add_argument("--archs", default=",".join(choices.REPRODUCE_ARCHS),
                     help=f"comma list of families (default {','.join(choices.REPRODUCE_ARCHS)})")
    rep.add_argument("--datasets", default=",".join(choices.REPRODUCE_DATASETS),
                     help="comma list of image/vector datasets (default "
                          f"{','.join(choices.REPRODUCE_DATASETS)}; the transformer runs on "
                          f"{choices.REPRODUCE_SEQUENCE_DATASET})")
    rep.add_argument("--output", metavar="DIR",
                     help="report folder (default $LOSSBARCODE_REPORTS or ./reports, then "
                          "reproduce-SCALE)")
    rep.add_argument("--data-root", metavar="DIR", default=None,
                     help="folder of dataset files (see README, Datasets)")
    rep.add_argument("--device", default=None, help="device of every run (default auto)")
    rep.add_argument("--estimate", action="store_true",
                     help="print the cost per setting and stop")
    rep.add_argument("--report-only", action="store_true",
                     help="compute nothing: report from the runs already stored (settings with "
                          "runs missing get no verdict)")
    rep.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    _add_yes(rep)
    _add_executor_flags(rep)
    _add_lock_timeout(rep)
    rep.set_defaults(handler=_cmd_reproduce)

    ls = with_results(sub.add_parser("list", help="list the runs in the results folder"))
    ls.set_defaults(handler=_cmd_list)

    show = with_results(sub.add_parser("show", help="barcode table and TO-score of a run"))
    show.add_argument("run", help="run id (see 'lossbarcode list')")
    show.add_argument("--json", action="store_true", help="print the whole Result as JSON")
    show.set_defaults(handler=_cmd_show)

    export = with_results(sub.add_parser("export", help="export a run as JSON or CSV"))
    export.add_argument("run", help="run id")
    export.add_argument("--format", choices=["json", "csv"], default="json",
                        help="json: the whole Result; csv: one row per minimum")
    export.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(handler=_cmd_export)

    views = with_results(sub.add_parser(
        "views", help="make a finished run's default views (minima maps, plane slice)",
        description="Make the views the Minima map and Landscape slice pages open on (their "
                    "default settings) for a finished run and store them with it, so that a "
                    "first open of those pages reads them instead of computing them. Views "
                    "already stored are read, not recomputed."))
    views.add_argument("run", help="run id (see 'lossbarcode list')")
    views.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    views.set_defaults(handler=_cmd_views)

    app = sub.add_parser("app", help="start the dashboard (streamlit run app.py)")
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--headless", action="store_true", help="do not open a browser")
    app.set_defaults(handler=_cmd_app)

    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    which = bench.add_subparsers(dest="benchmark", required=True)
    topo = which.add_parser(
        "topology", help="grid/graph barcodes vs ripser on 2-D grids and a kNN graph")
    topo.add_argument("--grid-sizes", default="101,501,1001",
                      help="comma list of 2-D grid side lengths (default: 101,501,1001)")
    topo.add_argument("--knn-points", type=int, default=100_000,
                      help="vertices of the kNN graph case (default: 100000)")
    topo.add_argument("--noise-size", type=int, default=1001,
                      help="side of the white-noise worst-case grid, 0 to skip (default 1001)")
    topo.add_argument("--repeat", type=_count, default=3, help="best of this many runs (default 3)")
    topo.set_defaults(handler=_bench_topology)

    conv = which.add_parser(
        "convergence", help="per pair: the default barrier against restarts, the string "
                            "method and a 4x budget, on every family")
    conv.add_argument("--families", default="fcn,cnn,resnet,transformer",
                      help="comma list of families (default fcn,cnn,resnet,transformer)")
    conv.add_argument("--minima", type=_count, default=4, help="minima K per family (default 4)")
    conv.add_argument("--factor", type=_count, default=4,
                      help="the larger budget, in multiples of the step caps (default 4)")
    conv.set_defaults(handler=_bench_convergence)

    engine = which.add_parser(
        "engine", help="batched vs looped training and NEB; GFLOP/s vs a plain matmul")
    engine.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    engine.add_argument("--widths", default="32", help="comma list of fcn widths (default 32)")
    engine.add_argument("--parts", default="minima,neb,neb-image",
                        help="comma list of parts to time: minima, neb, neb-image (default all)")
    engine.add_argument("--repeats", type=_count, default=3,
                        help="runs of each way; the best time counts (default 3)")
    engine.set_defaults(handler=_bench_engine)

    estimate = which.add_parser(
        "estimate", help="the cost model's predictions (raw and calibrated) vs measured runs")
    estimate.add_argument("--presets", default=",".join(choices.PRESETS),
                          help="comma list of dashboard presets (default: all of "
                               f"{','.join(choices.PRESETS)})")
    estimate.set_defaults(handler=_bench_estimate)

    app_bench = which.add_parser(
        "app", help="app start to first render and cached page switches (headless Chromium)")
    app_bench.add_argument("--runs", type=_count, default=5,
                           help="repetitions, median reported (default 5)")
    app_bench.set_defaults(handler=_bench_app)

    from lossbarcode.bench.load import LOAD_PAGES  # light: playwright loads when it runs

    load = which.add_parser(
        "load", help="N sessions opening one page at once on a fresh server: seconds, "
                     "exception boxes, server memory (headless Chromium)")
    load.add_argument("--sessions", type=_count, default=5,
                      help="browser sessions opening the page together (default 5)")
    load.add_argument("--rounds", type=_count, default=3,
                      help="fresh servers, one row each (default 3)")
    load.add_argument("--page", default="scaling", choices=sorted(LOAD_PAGES),
                      help="URL path of the page ('' is Explore; default scaling)")
    load.set_defaults(handler=_bench_load)

    first = which.add_parser(
        "first-open", help="seconds to the first chart of the Minima map and Landscape slice "
                           "pages on the demo run, with and without its shipped views")
    first.add_argument("--app", metavar="DIR",
                       help="the checkout to time (its app.py and assets/demo_runs; default "
                            "this one)")
    first.set_defaults(handler=_bench_first_open)

    toy_bench = which.add_parser(
        "toy", help="Toy landscapes animation: ms per frame in headless Chromium, messages sent")
    toy_bench.add_argument("--toys", default="three_hump_camel,rastrigin",
                           help="comma list of toys (default three_hump_camel,rastrigin)")
    toy_bench.add_argument("--rounds", type=_count, default=3,
                           help="passes over every frame after a warm-up (default 3)")
    toy_bench.set_defaults(handler=_bench_toy)

    minima_bench = which.add_parser(
        "minima", help="certified minima: new default training vs the old one; L-BFGS vs "
                       "gradient descent vs torch.optim.LBFGS")
    minima_bench.add_argument("--minima", type=_count, default=6,
                              help="minima K per case (default 6)")
    minima_bench.add_argument("--part", choices=("all", "training", "methods"), default="all",
                              help="which table to make (default all)")
    minima_bench.set_defaults(handler=_bench_minima)

    exp = which.add_parser("experiment", help="the default experiment, cold and cached, or "
                                              "its slowdown under a competing process")
    exp.add_argument("--repeat", type=_count, default=5,
                     help="cached loads to time, median reported (default 5)")
    exp.add_argument("--busy", action="store_true",
                     help="instead: its stages idle and with one competing CPU-bound process, "
                          "as a dashboard job and in this process, and the slowdown")
    exp.add_argument("--config", metavar="FILE", help="config instead of the default")
    _add_config_flags(exp)
    exp.set_defaults(handler=_bench_experiment)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"lossbarcode: warning: {_one_line(message)}", file=sys.stderr, flush=True)


def _os_error(err: OSError) -> str:
    where = f" {err.filename}" if err.filename else ""
    what = err.strerror or str(err)
    return f"could not read or write{where}: {what}; finished stages are kept"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # recorded as "made by"
    warnings.showwarning = _show_warning
    try:
        return args.handler(args)
    except (ValueError, TimeoutError) as err:  # bad input: one line
        print(f"lossbarcode: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"lossbarcode: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only folder, a file in the way
        print(f"lossbarcode: error: {_one_line(_os_error(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lossbarcode: interrupted; finished stages are saved and will be reused",
              file=sys.stderr)
        return 130
    except MemoryError:
        print("lossbarcode: error: out of memory; use fewer --minima or a smaller model",
              file=sys.stderr)
        return 2
    except Exception as err:  # a bug: still one line; LOSSBARCODE_DEBUG=1 shows the traceback
        if os.environ.get("LOSSBARCODE_DEBUG"):
            raise
        print(f"lossbarcode: internal error: {type(err).__name__}: {_one_line(err)} (set "
              "LOSSBARCODE_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 1
