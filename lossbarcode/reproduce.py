"""``lossbarcode reproduce``: the paper's two findings, measured on certified runs, with verdicts.

The paper (arXiv:2012.15834) claims that (1) loss barcodes and TO-scores shrink as networks get
wider and deeper, and (2) in some settings a minimum's segment length relates to its
generalization error. A **setting** is a family on a dataset (fcn on digits, cnn on
Fashion-MNIST, ...). At a **scale** (:data:`~lossbarcode.choices.REPRODUCE_SCALES`) each setting
runs a cross-shaped sweep: its widths at one depth, its depths at one narrow width, every seed.
Every run is an ordinary stored run, so an interrupted reproduction resumes where it stopped.

For each claim and setting the report gives what the paper says, what was measured (means with
hierarchical bootstrap intervals, :mod:`lossbarcode.confidence`; the within-run rank test,
:mod:`lossbarcode.stats`), how many runs, minima and bars are certified, and a verdict
(:data:`VERDICTS`):

- width and depth: ``reproduced`` when the trend's interval is below 0, ``contradicted`` when it
  is above 0, ``not resolved`` when it includes 0;
- generalization: ``reproduced`` when the within-run test gives p <= :data:`SIGNIFICANCE` (the
  sign is reported), else ``not resolved`` (a relation "in some settings" is not contradicted
  by its absence in one);
- ``not testable at this scale`` with the reason (too few usable runs or scales);
- ``missing runs``: a setting with runs not yet computed never gets a verdict; the report names
  what is missing.

Only runs that :func:`~lossbarcode.sweep.curve_ready` accepts (not broken, at least 90% of their
minima certified) enter a statistic; the report counts the others.
"""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lossbarcode import choices, confidence, stats
from lossbarcode.config import ExperimentConfig
from lossbarcode.store import ResultStore, atomic_write_bytes

CLAIMS = {
    "width": "Loss barcodes and TO-scores shrink as networks get wider.",
    "depth": "Loss barcodes and TO-scores shrink as networks get deeper.",
    "generalization": "In some settings the length of a minimum's segment relates to that "
                      "minimum's generalization error.",
}
VERDICTS = ("reproduced", "contradicted", "not resolved", "not testable at this scale",
            "missing runs")
SIGNIFICANCE = 0.05
REPORT_FILES = ("report.json", "report.md", "report.html")
REPORT_FORMAT = 1
REPORTS_ENV = "LOSSBARCODE_REPORTS"
_TREND_VERDICT = {"decreasing": "reproduced", "increasing": "contradicted",
                  "not resolved": "not resolved", "not testable": "not testable at this scale"}


@dataclass(frozen=True)
class Setting:
    """One family on one dataset at one scale: its base config and its sweep axes."""

    arch: str
    dataset: str
    base: ExperimentConfig
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    seeds: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.dataset} {self.arch}"

    def configs(self) -> list[ExperimentConfig]:
        """Every run of the setting: widths at the base depth, depths at the base width."""
        from lossbarcode.sweep import sweep_configs

        return sweep_configs(self.base, self.widths, self.depths, self.seeds, design="cross")


def _names(values: Sequence[str], known: Sequence[str], flag: str) -> tuple[str, ...]:
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        got = ", ".join(values) or "none"
        raise ValueError(f"{flag}: choose from {', '.join(known)} (got {got})")
    return tuple(dict.fromkeys(values))


def plan(scale: str = choices.REPRODUCE_SCALE,
         archs: Sequence[str] = choices.REPRODUCE_ARCHS,
         datasets: Sequence[str] = choices.REPRODUCE_DATASETS,
         **config: Any) -> list[Setting]:
    """The settings of a reproduction: every family in ``archs`` on every dataset in
    ``datasets`` that it takes (the transformer takes token sequences: it runs on
    :data:`~lossbarcode.choices.REPRODUCE_SEQUENCE_DATASET`, whatever ``datasets`` says).
    ``config``: further fields of every run's config (e.g. ``data_root``, ``device``)."""
    if scale not in choices.REPRODUCE_SCALES:
        raise ValueError(f"--scale: choose from {', '.join(choices.REPRODUCE_SCALES)} "
                         f"(got {scale!r})")
    archs = _names(archs, choices.REPRODUCE_ARCHS, "--archs")
    datasets = _names(datasets, [d for d in choices.DATASETS
                                 if d not in choices.SEQUENCE_DATASETS], "--datasets")
    spec = choices.REPRODUCE_SCALES[scale]
    settings = []
    for arch in archs:
        axes = spec["axes"][arch]
        for dataset in ((choices.REPRODUCE_SEQUENCE_DATASET,) if arch == "transformer"
                        else datasets):
            _, _, n_train, n_test = choices.DATASET_SHAPES[dataset]
            sizes = {"n_train": spec["n_train"] if spec["n_train"] and n_train > spec["n_train"]
                     else None,
                     "n_test": spec["n_test"] if spec["n_test"] and n_test > spec["n_test"]
                     else None}
            base = ExperimentConfig(dataset=dataset, arch=arch, width=axes["width"],
                                    depth=axes["depth"], k=spec["k"], **sizes, **config)
            settings.append(Setting(arch, dataset, base, tuple(axes["widths"]),
                                    tuple(axes["depths"]), tuple(spec["seeds"])))
    return settings


def plan_cost(settings: Sequence[Setting]) -> dict[str, Any]:
    """What the reproduction costs before it runs, from the cost model: ``{"runs",
    "seconds", "memory", "settings": [{"setting", "runs", "seconds"}]}``. ``ValueError``
    (with the estimate) when a run cannot fit this machine's memory."""
    from lossbarcode.cost import check_fits, estimate_cost

    rows, memory = [], 0
    for s in settings:
        seconds, configs = 0.0, s.configs()
        for config in configs:
            estimate = estimate_cost(config)
            try:
                check_fits(config)
            except ValueError as err:
                raise ValueError(f"{s.name} width {config.width} depth {config.depth} does not "
                                 f"fit this machine ({err}); choose a smaller --scale") from None
            seconds += estimate["seconds"]
            memory = max(memory, int(estimate["memory"]))
        rows.append({"setting": s.name, "runs": len(configs), "seconds": seconds})
    return {"runs": sum(r["runs"] for r in rows), "seconds": sum(r["seconds"] for r in rows),
            "memory": memory, "settings": rows}


def run(settings: Sequence[Setting], store: ResultStore, executor: str = "local",
        progress: Callable[[Setting, int, int, ExperimentConfig], Any] | None = None,
        **sweep_options: Any) -> dict[str, str]:
    """Compute (or load) every run of every setting. A setting whose data cannot be loaded is
    skipped; returns ``{setting name: why}`` for those (the report names them)."""
    from lossbarcode.sweep import sweep

    skipped = {}
    for s in settings:
        def step(done: int, total: int, config: ExperimentConfig, s: Setting = s) -> None:
            if progress:
                progress(s, done, total, config)

        try:
            sweep(s.base, s.widths, s.depths, s.seeds, executor=executor, store=store,
                  progress=step, design="cross", **sweep_options)
        except (FileNotFoundError, ImportError) as err:
            skipped[s.name] = str(err)
    return skipped


# --------------------------------------------------------------------------- measuring


def _axis_claim(axis: str, setting: Setting, ready: list, records: list[dict[str, Any]],
                variant: str) -> dict[str, Any]:
    """The width or depth claim of one setting from its curve-ready results (``records``:
    their sweep records). The trend and the scales it leaves out, their deaths not certified,
    are :func:`~lossbarcode.sweep.sweep_trends`'s, as on the Scaling page."""
    from lossbarcode.sweep import sweep_trends

    fixed, other = ("depth", setting.base.depth) if axis == "width" else ("width",
                                                                          setting.base.width)
    on_curve = [r for r in ready if getattr(r.config, fixed) == other]
    trend, upper_bounds = sweep_trends(records, {r.run_id: r.barcode for r in on_curve})[
        (setting.arch, axis)]
    points = []
    for value in sorted({getattr(r.config, axis) for r in on_curve}):
        runs = [r for r in on_curve if getattr(r.config, axis) == value]
        interval = confidence.scale_interval([r.barcode for r in runs], variant)
        points.append({axis: value, "runs": len(runs), "seeds": [r.config.seed for r in runs],
                       "to_score": interval.to_dict(),
                       "bars_certified": sum(r.certified[0] for r in runs),
                       "bars_finite": sum(r.certified[1] for r in runs),
                       "in_trend": value in trend.values,
                       "seed_interval": confidence.seed_interval(
                           [r.scores[variant] for r in runs]).to_dict()})
    left = (f"; left out of the trend, their deaths not certified (upper bounds): {axis} "
            + ", ".join(upper_bounds) + " certified bars") if upper_bounds else ""
    return {"claim": axis, "paper": CLAIMS[axis], "verdict": _TREND_VERDICT[trend.verdict],
            "reason": f"{trend.reason} ({fixed} {other}; bars within path_atol "
                      f"{setting.base.path_atol:g} of 0 count as 0{left})",
            "trend": trend.to_dict(), "points": points}


def _certified_lengths(result) -> np.ndarray:
    """``(K,)`` segment length of each minimum whose bar is certified (birth and death), NaN
    for the others: an uncertified length is not a property of that minimum. Lengths within
    the barrier resolution are 0 (:meth:`Result.resolved_lengths`)."""
    lengths = np.full(result.k, np.nan)
    ok = result.bar_certified() & np.isfinite(result.barcode.deaths)
    minima = result.barcode.minima[ok]
    lengths[minima] = result.resolved_lengths()[minima]
    return lengths


def _generalization_claim(ready: list) -> dict[str, Any]:
    """The within-run rank test of certified segment lengths against test error."""
    groups = {r.run_id: (_certified_lengths(r), r.test_error) for r in ready}
    test = stats.stratified_spearman(groups).combined
    base = {"claim": "generalization", "paper": CLAIMS["generalization"],
            "test": test.to_dict(), "method": test.describe()}
    if test.rho is None:
        return {**base, "verdict": "not testable at this scale",
                "reason": f"the within-run rank test is undefined: {test.reason}"}
    relation = (f"within-run ρ = {test.rho:.2f} (longer segments, "
                f"{'higher' if test.rho > 0 else 'lower'} test error), p = {test.p_text()}, "
                f"n = {test.n} minima in {len(groups)} runs")
    if test.p_value is not None and test.p_value <= SIGNIFICANCE:
        return {**base, "verdict": "reproduced", "reason": relation}
    return {**base, "verdict": "not resolved",
            "reason": f"{relation}: not significant at {SIGNIFICANCE}"}


def _missing_claims(missing: list[ExperimentConfig], skipped: str | None) -> list[dict]:
    why = skipped or (f"{len(missing)} runs not computed yet: "
                      + ", ".join(sorted({f"width {c.width} depth {c.depth}" for c in missing}))
                      + "; run the same command again to compute them")
    return [{"claim": claim, "paper": text, "verdict": "missing runs", "reason": why}
            for claim, text in CLAIMS.items()]


def measure_setting(setting: Setting, store: ResultStore, skipped: str | None = None
                    ) -> dict[str, Any]:
    """The report section of one setting, from the runs in ``store`` (nothing is computed)."""
    from lossbarcode.experiment import load_result
    from lossbarcode.sweep import curve_ready, summarize, sweep_records

    configs = setting.configs()
    found = {c.run_id: load_result(store, c.run_id, warn=False) for c in configs}
    missing = [c for c in configs if found[c.run_id] is None]
    results = [r for r in found.values() if r is not None]
    records = sweep_records(results)
    ready = [r for r, rec in zip(results, records, strict=True) if curve_ready(rec)]
    variant = setting.base.score_variant
    section: dict[str, Any] = {
        "setting": setting.name, "arch": setting.arch, "dataset": setting.dataset,
        "base": setting.base.to_dict(), "widths": list(setting.widths),
        "depths": list(setting.depths), "seeds": list(setting.seeds),
        "score_variant": variant,
        "runs": {"planned": len(configs), "done": len(results), "curve_ready": len(ready)},
        "minima": {"certified": int(sum(r.minima_count[0] for r in results)),
                   "total": int(sum(r.k for r in results))},
        "bars": {"certified": int(sum(r.certified[0] for r in results)),
                 "finite": int(sum(r.certified[1] for r in results))},
        "seconds": float(sum(sum(r.timings.values()) for r in results)),
        "left_out": [{"run_id": rec["run_id"], "width": rec["width"], "depth": rec["depth"],
                      "seed": rec["seed"], "health": rec["health"]}
                     for rec in records if not curve_ready(rec)],
        "summary": summarize(records, barcodes={r.run_id: r.barcode for r in results}),
    }
    if missing or skipped:
        section["claims"] = _missing_claims(missing, skipped)
        return section
    ready_records = [rec for rec in records if curve_ready(rec)]
    section["claims"] = [_axis_claim("width", setting, ready, ready_records, variant),
                         _axis_claim("depth", setting, ready, ready_records, variant),
                         _generalization_claim(ready)]
    return section


def measure(settings: Sequence[Setting], store: ResultStore, scale: str, command: str,
            skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole report (a JSON-able dict) from the runs in ``store``."""
    from lossbarcode import __version__

    sections = [measure_setting(s, store, (skipped or {}).get(s.name)) for s in settings]
    return {"format": REPORT_FORMAT, "scale": scale, "command": command,
            "made": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "lossbarcode": __version__,
            "seconds": float(sum(s["seconds"] for s in sections)),
            "significance": SIGNIFICANCE, "level": confidence.LEVEL,
            "settings": sections}


# --------------------------------------------------------------------------- writing


def verdict_table(report: dict[str, Any]) -> list[dict[str, str]]:
    """Claims x settings: one row per (setting, claim) with its verdict and reason."""
    return [{"setting": s["setting"], "claim": c["claim"], "verdict": c["verdict"],
             "reason": c["reason"]} for s in report["settings"] for c in s["claims"]]


def certification_text(section: dict[str, Any]) -> str:
    r, m, b = section["runs"], section["minima"], section["bars"]
    return (f"{r['done']}/{r['planned']} runs done, {r['curve_ready']} usable (not broken, "
            f"≥ 90% of minima certified); {m['certified']}/{m['total']} minima certified, "
            f"{b['certified']}/{b['finite']} finite bars certified")


def _preamble(report: dict[str, Any]) -> list[str]:
    """The paragraphs under the report's title: how it was made and what enters it."""
    return [f"Made {report['made']} by lossbarcode {report['lossbarcode']} with "
            f"`{report['command']}`; {report['seconds'] / 60:.1f} min of computing in its runs.",
            f"Intervals: {report['level']:.0%}, hierarchical bootstrap over seeds and minima. "
            "Only runs that are not broken and have at least 90% of their minima certified "
            "enter a statistic."]


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# Reproduction of arXiv:2012.15834 at scale `{report['scale']}`", ""]
    for paragraph in _preamble(report):
        lines += [paragraph, ""]
    lines += ["| setting | claim | verdict | why |", "|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['claim']} | **{r['verdict']}** | {r['reason']} |"
              for r in verdict_table(report)]
    for section in report["settings"]:
        lines += ["", f"## {section['setting']}", "", certification_text(section), ""]
        for claim in section["claims"]:
            lines += [f"- **{claim['claim']}** — paper: {claim['paper']} "
                      f"Verdict: **{claim['verdict']}** ({claim['reason']})."]
            for p in claim.get("points", []):
                axis = claim["claim"]
                lines.append(f"  - {axis} {p[axis]}: TO-score "
                             f"{confidence.Interval(**p['to_score']).text()} over "
                             f"{p['runs']} runs")
        if section["left_out"]:
            lines.append(f"- left out: {len(section['left_out'])} runs (" + "; ".join(
                f"width {r['width']} depth {r['depth']} seed {r['seed']}: {r['health']}"
                for r in section["left_out"]) + ")")
    return "\n".join(lines) + "\n"


def curve_figures(section: dict[str, Any]) -> list:
    """The width and depth curves of one setting of a report (plotly figures, with the
    intervals as bands); none for a setting with runs missing."""
    from lossbarcode.plots import scaling_figure

    if any(c["verdict"] == "missing runs" for c in section["claims"]):
        return []
    figures = []
    for axis, fixed in (("width", "depth"), ("depth", "width")):
        rows = [r for r in section["summary"] if r[fixed] == section["base"][fixed]]
        if len({r[axis] for r in rows}) >= 2:
            figures.append(scaling_figure(rows, x=axis, log_x=axis == "width",
                                          score_variant=section["score_variant"],
                                          title=f"{section['setting']}: TO-score vs {axis} "
                                                f"({fixed} {section['base'][fixed]})"))
    return figures


def reports_folder() -> Path:
    """Where reports go by default and where the dashboard looks for the user's:
    ``$LOSSBARCODE_REPORTS`` or ``./reports``."""
    return Path(os.environ.get(REPORTS_ENV) or "reports")


def find_reports(*folders: Path) -> list[Path]:
    """The ``report.json`` files directly under each folder or one level down (e.g.
    ``assets/`` and ``reports/``), newest first; unreadable ones left out."""
    found = []
    for folder in folders:
        for path in [Path(folder) / "report.json", *Path(folder).glob("*/report.json")]:
            try:
                read_report(path)
            except ValueError:
                continue
            found.append(path)
    return sorted(set(found), key=lambda p: p.stat().st_mtime, reverse=True)


def _html(report: dict[str, Any]) -> str:
    parts, first = [], True
    for section in report["settings"]:
        parts.append(f"<h2>{html.escape(section['setting'])}</h2>"
                     f"<p>{html.escape(certification_text(section))}</p><ul>")
        parts += [f"<li><b>{html.escape(c['claim'])}</b>: {html.escape(c['paper'])} "
                  f"<b>{html.escape(c['verdict'])}</b> ({html.escape(c['reason'])})</li>"
                  for c in section["claims"]]
        parts.append("</ul>")
        for fig in curve_figures(section):
            parts.append(fig.to_html(full_html=False, include_plotlyjs=first))
            first = False
    table = "".join(
        f"<tr><td>{html.escape(r['setting'])}</td><td>{html.escape(r['claim'])}</td>"
        f"<td><b>{html.escape(r['verdict'])}</b></td><td>{html.escape(r['reason'])}</td></tr>"
        for r in verdict_table(report))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>lossbarcode reproduction"
            f"</title></head><body style='font-family:sans-serif;max-width:1000px;margin:auto'>"
            f"<h1>Reproduction of arXiv:2012.15834 at scale {html.escape(report['scale'])}</h1>"
            + "".join(f"<p>{html.escape(p)}</p>" for p in _preamble(report)) +
            "<table border='1' cellpadding='4' style='border-collapse:collapse'>"
            "<tr><th>setting</th><th>claim</th><th>verdict</th><th>why</th></tr>"
            f"{table}</table>{''.join(parts)}</body></html>")


def write_report(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write :data:`REPORT_FILES` (JSON, Markdown, self-contained HTML) into ``folder``
    (each file atomically); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    texts = [json.dumps(_jsonable(report), indent=1, allow_nan=False), _markdown(report),
             _html(report)]
    paths = [folder / name for name in REPORT_FILES]
    for path, text in zip(paths, texts, strict=True):
        atomic_write_bytes(path, text.encode("utf-8"))
    return paths


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and non-finite floats as None (JSON has
    no NaN or infinity)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def read_report(path: Path) -> dict[str, Any]:
    """A report written by :func:`write_report` (its ``report.json``, or the folder holding
    it); ``ValueError`` saying what is wrong for anything else."""
    path = Path(path)
    path = path / "report.json" if path.is_dir() else path
    try:
        report = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a reproduction report ({err})") from None
    if not (isinstance(report, dict) and report.get("format") == REPORT_FORMAT
            and isinstance(report.get("settings"), list)):
        raise ValueError(f"{path} is not a reproduction report of format {REPORT_FORMAT}")
    return report
