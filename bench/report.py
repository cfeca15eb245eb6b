"""Rows of figures and the BENCHMARKS.md text, from one run's results (pure: no I/O but `write`).

Every number in the report comes from the results dict that the run produced; the only other
input is bench/profile_notes.md, prose that says what a profile showed and what was changed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import Summary, Target, fmt, ratios

# Rows whose history the report shows beside the profiled one (matched as name prefixes).
EXPERIMENT_ROWS = ("1: 200 KiB files, 1 client, files/s", "1: 200 KiB files, 16 clients, files/s",
                   "2: accepted-to-stored p95", "6: worker RSS growth, one", "7: round of")
PROJECT_DIRS = ("accounts/", "uploads/", "notifications/", "batching/", "poolhub/", "bench/")


def row(name: str, unit: str, values: Sequence[float], *, baseline_name: str = "",
        baseline_values: Sequence[float] = (), target: Target | None = None, on: str = "ratio",
        note: str = "") -> dict[str, Any]:
    """One line of a figure: poolhub's runs, the baseline's runs in the same run, their per-run
    ratio, and the issue's target judged on the median of `on` ('ratio' or 'value')."""
    value = Summary.of(values).as_dict() if values else None
    baseline = Summary.of(baseline_values).as_dict() if baseline_values else None
    per_run = ratios(values, baseline_values) if values and baseline_values else []
    ratio = Summary.of(per_run).as_dict() if per_run else None
    result: dict[str, Any] = {"name": name, "unit": unit, "value": value, "baseline_name": baseline_name,
                              "baseline": baseline, "ratio": ratio, "target": None, "on": on, "met": None,
                              "score": None, "note": note}
    if target is not None:
        result["target"] = {"kind": target.kind, "value": target.value, "text": target.text}
        judged = (ratio if on == "ratio" else value) or {}
        if "median" in judged:
            result["met"] = target.met(float(judged["median"]))
            result["score"] = target.score(float(judged["median"]))
    return result


def worst_row(figures: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The (figure, row) furthest from its target: the smallest score (met when above 1)."""
    candidates = [(figure, r) for figure in figures for r in figure.get("rows", []) if r.get("score") is not None]
    if not candidates:
        return None
    return min(candidates, key=lambda pair: float(pair[1]["score"]))


def _cell(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "-"
    if summary.get("n", 0) == 1:
        return fmt(summary["median"])
    return f"{fmt(summary['median'])} ({fmt(summary['min'])}-{fmt(summary['max'])})"


def _label(r: dict[str, Any]) -> str:
    """A row's name with its unit, unless the name already ends with it."""
    return r["name"] if r["name"].endswith(", " + r["unit"]) else f"{r['name']} ({r['unit']})"


def _verdict(r: dict[str, Any]) -> str:
    if r.get("target") is None:
        return "no target"
    met = r.get("met")
    text = r["target"]["text"]
    if met is None:
        return f"{text}: not judged"
    return f"{text}: **{'met' if met else 'missed'}**"


def figure_markdown(figure: dict[str, Any]) -> list[str]:
    lines = [f"### {figure['key']}. {figure['title']}", ""]
    status = figure.get("status", "measured")
    if status != "measured":
        lines += [f"**{status}**", ""]
    for paragraph in figure.get("setup", []):
        lines += [paragraph, ""]
    rows = figure.get("rows", [])
    if rows:
        lines += ["| measure | poolhub median (min-max) | baseline | baseline median (min-max) "
                  "| ratio median (min-max) | target |",
                  "|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {_label(r)} | {_cell(r['value'])} | {r['baseline_name'] or '-'} "
                         f"| {_cell(r['baseline'])} | {_cell(r['ratio'])} | {_verdict(r)} |")
        lines.append("")
        notes = [f"- {r['name']}: {r['note']}" for r in rows if r.get("note")]
        if notes:
            lines += [*notes, ""]
    phases = figure.get("phases")
    if phases:
        total = sum(phases.values())
        lines += ["| phase | seconds | share |", "|---|---|---|"]
        for phase, seconds in phases.items():
            share = f"{100 * seconds / total:.0f}%" if total else "-"
            lines.append(f"| {phase} | {fmt(seconds)} | {share} |")
        lines.append("")
    for note in figure.get("notes", []):
        lines.append(f"- {note}")
    if figure.get("notes"):
        lines.append("")
    return lines


def profile_markdown(profile: dict[str, Any] | None, notes: str, history: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["## Profile of the figure furthest from its target", ""]
    if not profile:
        lines += ["No profile was taken in this run.", ""]
    else:
        lines += [f"Furthest from its target in this run: **{profile['figure']}: {profile['row']}** "
                  f"(score {fmt(profile['score'])}, where 1 is exactly on target). One more repetition of it ran "
                  f"under py-spy ({profile.get('rate', 100)} samples/s, `--gil`: only the thread holding the GIL, so "
                  f"the shares are of the process's Python CPU time).", ""]
        for proc in profile.get("processes", []):
            lines += [f"**{proc['name']}** ({proc['samples']} samples)", ""]
            if proc.get("error"):
                lines += [f"profiling failed: {proc['error']}", ""]
                continue
            lines += ["| self time: function | share |", "|---|---|"]
            lines += [f"| `{name}` | {share:.1f}% |" for name, share in proc.get("self", [])]
            lines += ["", "| inclusive, project code: function | share |", "|---|---|"]
            lines += [f"| `{name}` | {share:.1f}% |" for name, share in proc.get("project", [])]
            lines += ["", "| inclusive, any code (frames under < 90% of samples): function | share |", "|---|---|"]
            lines += [f"| `{name}` | {share:.1f}% |" for name, share in proc.get("inclusive", [])]
            lines.append("")
    if notes.strip():
        lines += ["### What the profile showed, and what was changed", "", notes.strip(), ""]
    if history:
        wanted = [f"{profile['figure']}: {profile['row']}"] if profile else []
        wanted += [name for name in EXPERIMENT_ROWS if name not in wanted]
        shown = [h for h in history if h.get("label") or h is history[-1]]
        lines += ["### Before and after", "",
                  "Runs recorded in bench/history.jsonl by this harness (the last line is this run; labelled "
                  "lines are experiments, each run with the change its label names). Rows are matched by name "
                  "prefix, so a smaller experimental round still lines up with the full one.", "",
                  "| run (UTC) | code | measure | median | ratio median | target |", "|---|---|---|---|---|---|"]
        for h in shown[-12:]:
            for prefix in wanted:
                for name, entry in h.get("rows", {}).items():
                    if not name.startswith(prefix):
                        continue
                    met = "met" if entry.get("met") else ("missed" if entry.get("met") is False else "-")
                    code = f"`{h['commit'][:10]}`" + (" + uncommitted" if h.get("dirty") else "")
                    code += f", {h['label']}" if h.get("label") else ""
                    lines.append(f"| {h['when']} | {code} | {name} | {fmt(entry.get('median'))} "
                                 f"| {fmt(entry.get('ratio'))} | {met} |")
        lines.append("")
    return lines


def render(results: dict[str, Any], notes: str = "", history: Sequence[dict[str, Any]] = ()) -> str:
    meta, machine, config = results["meta"], results["machine"], results["config"]
    mode = "QUICK smoke run (BENCH_QUICK=1): smaller sizes, fewer runs" if meta["quick"] else "full run"
    lines = [
        "# poolhub benchmarks",
        "",
        "Written by `make bench` (bench/run.py) from the run described here; no number in this file is "
        "typed by hand. Each figure runs beside its raw baseline in the same run; medians of the runs with "
        "min-max in brackets; ratios are computed per run (poolhub / baseline) and then summarised. "
        "How to run it and its knobs: bench/README.md.",
        "",
        f"- Run: {meta['started']} to {meta['finished']} ({fmt(meta['duration_s'])} s), {mode}.",
        f"- Code: commit `{meta['commit']}`" + (" with uncommitted changes in the working tree" if meta.get("dirty")
                                               else ""),
        "",
        "## Machine",
        "",
        f"- {machine['cores']} CPU cores, {fmt(machine['memory_gib'])} GiB memory, {machine['platform']}",
        f"- Python {machine['python']}",
        *([f"- {machine['load']}"] if machine.get("load") else []),
        "- " + ", ".join(f"{k} {v}" for k, v in sorted(machine.get("versions", {}).items())),
        "",
        "## Configuration",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in config.items()]
    lines += ["", "## Summary", "", "| figure | measure | poolhub | ratio to baseline | target |",
              "|---|---|---|---|---|"]
    for figure in results["figures"]:
        if figure.get("status", "measured") != "measured" and not figure.get("rows"):
            lines.append(f"| {figure['key']} | {figure['title']} | {figure['status']} | - | - |")
            continue
        for r in figure.get("rows", []):
            if r.get("target") is not None or figure["key"] in ("3", "7"):
                lines.append(f"| {figure['key']} | {_label(r)} | {fmt((r['value'] or {}).get('median'))} "
                             f"| {fmt((r['ratio'] or {}).get('median'))} | {_verdict(r)} |")
    lines += ["", "## Figures", ""]
    for figure in results["figures"]:
        lines += figure_markdown(figure)
    lines += profile_markdown(results.get("profile"), notes, history)
    if results.get("errors"):
        lines += ["## Errors during the run", ""] + [f"- {e}" for e in results["errors"]] + [""]
    return "\n".join(lines).rstrip() + "\n"


def history_entry(results: dict[str, Any]) -> dict[str, Any]:
    """What later runs need to show a before/after: each targeted row's medians, per run."""
    rows: dict[str, Any] = {}
    for figure in results["figures"]:
        for r in figure.get("rows", []):
            rows[f"{figure['key']}: {r['name']}"] = {
                "median": (r.get("value") or {}).get("median"), "ratio": (r.get("ratio") or {}).get("median"),
                "met": r.get("met")}
    return {"when": results["meta"]["started"], "commit": results["meta"]["commit"],
            "dirty": results["meta"].get("dirty", False), "quick": results["meta"]["quick"], "rows": rows}


def parse_collapsed(text: str, top: int = 12) -> dict[str, Any]:
    """Self and inclusive shares from py-spy's raw (collapsed stack) output."""
    self_counts: dict[str, int] = {}
    project: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count
            if any(f"({d}" in name for d in PROJECT_DIRS):
                project[name] = project.get(name, 0) + count

    def shares(counts: dict[str, int]) -> list[tuple[str, float]]:
        ordered = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:top]
        return [(name, 100 * value / total) for name, value in ordered] if total else []

    # Frames under (nearly) every sample (the event loop, the thread runner) say nothing: left out.
    below_root = {name: value for name, value in inclusive.items() if value < 0.9 * total}
    return {"samples": total, "self": shares(self_counts), "project": shares(project),
            "inclusive": shares(below_root)}


def _frame_name(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (path/to/file.py)', shortened to the project or package path."""
    frame = frame.strip()
    if frame.startswith(("process ", "thread ")) or not frame.endswith(")") or " (" not in frame:
        return ""
    func, _, where = frame.rpartition(" (")
    path = where[:-1].rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        base = str(Path(__file__).resolve().parent.parent) + "/"
        path = path.replace(base, "")
    return f"{func} ({path})"


def write(path: Path, results: dict[str, Any], notes: str, history: Sequence[dict[str, Any]]) -> None:
    path.write_text(render(results, notes, history))


def dumps(results: dict[str, Any]) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return None
        return value

    return json.dumps(results, default=clean, indent=1)
