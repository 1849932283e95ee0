"""`imgclass compare`: the headline table of every experiment, from `dvc exp show --json`.

One row per commit, workspace and DVC experiment: what changed (params that differ from the baseline
commit), each member's test accuracy (metrics/eval/M.json), each vote and the oracle
(metrics/ensemble.json, `*` marks the vote chosen on validation) and the training time (the members'
train_seconds, summed: metrics/eval/M.json, or metrics/train/M.json in older commits). Lines never
exceed the width (120 by default): long param lists wrap inside their column.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

VOTES = ("hard_vote", "soft_vote", "weighted_vote", "oracle")
MEMBER_HEADER_MAX = 10
NAME_MAX = 20
MIN_PARAMS_WIDTH = 16
GAP = "  "       # around the text columns
NUMBER_GAP = " "  # between right-aligned numbers


@dataclass
class Row:
    name: str
    changed: list[str] = field(default_factory=list)
    members: dict[str, float] = field(default_factory=dict)
    votes: dict[str, float] = field(default_factory=dict)
    chosen_vote: str | None = None
    train_seconds: float | None = None


# ---------------------------------------------------------------- reading dvc exp show

def exp_show(repo: Path) -> list[dict]:
    """`dvc exp show --json` of the repository (the venv's dvc when imgclass runs from one)."""
    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc) if dvc.exists() else "dvc", "exp", "show", "--json"], cwd=repo,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc exp show failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return json.loads(proc.stdout)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def file_data(data: dict, kind: str) -> dict[str, dict]:
    """{path: content} of the `params` or `metrics` files of one revision (files DVC could not read are left out)."""
    return {path: entry.get("data") or {} for path, entry in ((data or {}).get(kind) or {}).items()
            if isinstance(entry, dict)}


def params_of(data: dict) -> dict:
    out = {}
    for path, content in file_data(data, "params").items():
        prefix = "" if path == "params.yaml" else f"{path}:"
        out.update({f"{prefix}{k}": v for k, v in flatten(content).items()})
    return out


def changed_params(params: dict, baseline: dict) -> list[str]:
    """`key=value` of what differs; `models.` is dropped: the model names are the table's columns."""
    changed = [f"{k}={v}" for k, v in params.items() if baseline.get(k) != v] + \
              [f"{k} removed" for k in baseline if k not in params]
    return [c.removeprefix("models.") for c in changed]


def number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def model_name(path: str, folder: str) -> str | None:
    """`metrics/eval/resnet18.json` -> resnet18 for folder `metrics/eval`."""
    p = Path(path)
    return p.stem if p.parent.as_posix() == folder and p.suffix == ".json" else None


def row_from(name: str, data: dict, baseline_params: dict | None) -> Row:
    """One table row; reads metrics defensively (older and newer metric files, failed stages)."""
    metrics = file_data(data, "metrics")
    params = params_of(data)
    row = Row(name, changed_params(params, baseline_params) if baseline_params is not None else [])
    ensemble = metrics.get("metrics/ensemble.json", {})
    row.members, row.votes = split_ensemble_table(ensemble)
    seconds: dict[str, float] = {}
    for path, content in sorted(metrics.items(), key=lambda item: in_params_order(item[0], params)):
        if (member := model_name(path, "metrics/eval")) and number(content.get("accuracy")) is not None:
            row.members[member] = number(content["accuracy"])  # the evaluate stage's own number wins
        member = model_name(path, "metrics/eval") or model_name(path, "metrics/train")
        if member and number(content.get("train_seconds")) is not None:
            seconds.setdefault(member, number(content["train_seconds"]))  # eval's copy, or an older train file
    chosen = ensemble.get("chosen_vote")
    row.chosen_vote = chosen if isinstance(chosen, str) else None
    row.train_seconds = sum(seconds.values()) if seconds else None
    return row


def split_ensemble_table(ensemble: dict) -> tuple[dict[str, float], dict[str, float]]:
    """(members, votes) of metrics/ensemble.json: votes and the oracle at its top level, or (older
    files) every member, vote and the oracle under `test_accuracy`."""
    table = ensemble.get("test_accuracy") if isinstance(ensemble.get("test_accuracy"), dict) else ensemble
    members, votes = {}, {}
    for key, value in table.items():
        if number(value) is None or key in ("accuracy", "chosen_vote"):
            continue
        if key in VOTES or key.endswith("_vote"):
            votes[key] = number(value)
        elif table is not ensemble:
            members[key] = number(value)
    return members, votes


def in_params_order(path: str, params: dict) -> tuple[int, str]:
    """Metrics files of the models in params.yaml's order (the ensemble's), then any other, by path."""
    order = list(dict.fromkeys(k.split(".")[1] for k in params if k.startswith("models.") and k.count(".") >= 2))
    name = Path(path).stem
    return (order.index(name) if name in order else len(order), path)


def experiment_state(experiment: dict) -> str | None:
    state = ((experiment or {}).get("executor") or {}).get("state")
    return state if state and state not in ("success", "done") else None


def rows_from_show(show: list[dict]) -> list[Row]:
    """Workspace, then each commit followed by its experiments. The workspace compares with the
    first commit (HEAD), an experiment with its baseline commit."""
    rows = []
    commits = [entry for entry in show if entry.get("rev") != "workspace"]
    head_params = params_of(commits[0].get("data") or {}) if commits else None
    for entry in show:
        data = entry.get("data") or {}
        if entry.get("rev") == "workspace":
            rows.append(row_from("workspace", data, head_params))
            continue
        rows.append(row_from(entry.get("name") or entry.get("rev", "")[:7], data, None))
        baseline = params_of(data)
        for experiment in entry.get("experiments") or []:
            revs = experiment.get("revs") or [{}]
            name = experiment.get("name") or revs[0].get("name") or revs[0].get("rev", "")[:7]
            state = experiment_state(experiment)
            rows.append(row_from(f"  {name}" + (f" ({state})" if state else ""), revs[0].get("data") or {},
                                 baseline))
    return rows


# ---------------------------------------------------------------- the table

def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def accuracy(value: float | None, mark: bool = False) -> str:
    return "-" if value is None else f"{value:.3f}" + ("*" if mark else "")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def pack(items: list[str], width: int) -> list[str]:
    """Items joined by ', ' into lines of at most `width`; an item longer than a line is broken."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += f", {item}"
        else:
            lines += break_item(item, width)
    return lines or [""]


def break_item(item: str, width: int) -> list[str]:
    """A long `a.b.c=value` broken after dots and '=' where possible, else anywhere."""
    lines = [""]
    for token in re.findall(r"[^.=]+[.=]?|[.=]", item):
        if lines[-1] and len(lines[-1]) + len(token) > width:
            lines.append("")
        while len(token) > width:  # one token wider than the column: chop it
            lines[-1] = token[:width]
            lines.append("")
            token = token[width:]
        lines[-1] += token
    return [line for line in lines if line]


def ordered_union(lists) -> list[str]:
    seen: dict[str, None] = {}
    for items in lists:
        seen.update(dict.fromkeys(items))
    return list(seen)


def render(rows: list[Row], width: int = 120) -> str:
    """Aligned columns: experiment, changed params (wrapped), members, votes, time."""
    members = ordered_union(r.members for r in rows)
    votes = [v for v in ordered_union([VOTES, *(r.votes for r in rows)]) if any(v in r.votes for r in rows)]
    numeric_headers = ([short(m, MEMBER_HEADER_MAX) for m in members]
                       + [v.removesuffix("_vote") for v in votes] + ["time"])
    numeric_cells = [[accuracy(r.members.get(m)) for m in members]
                     + [accuracy(r.votes.get(v), v == r.chosen_vote) for v in votes]
                     + [duration(r.train_seconds)] for r in rows]
    numeric_widths = [max(len(h), *(len(c[i]) for c in numeric_cells)) for i, h in enumerate(numeric_headers)]
    name_width = min(NAME_MAX, max(len("experiment"), *(len(r.name) for r in rows)))
    numbers_width = sum(numeric_widths) + len(NUMBER_GAP) * (len(numeric_widths) - 1)
    params_width = max(MIN_PARAMS_WIDTH, width - name_width - numbers_width - 2 * len(GAP))

    def line(name: str, params: str, cells: list[str]) -> str:
        numbers = NUMBER_GAP.join(c.rjust(w) for c, w in zip(cells, numeric_widths))
        return f"{short(name, name_width):<{name_width}}{GAP}{params:<{params_width}}{GAP}{numbers}".rstrip()

    out = [line("experiment", "changed params", numeric_headers)]
    out.append("-" * len(out[0]))
    for row, cells in zip(rows, numeric_cells):
        wrapped = pack(row.changed, params_width)
        out.append(line(row.name, wrapped[0], cells))
        out += [line("", more, [""] * len(cells)) for more in wrapped[1:]]
    out.append("test accuracy of each model and vote (* = the vote chosen on validation); time: training, all models")
    return "\n".join(short(text, width) for text in out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="imgclass compare", description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=120, help="table width in characters (default 120)")
    args = parser.parse_args(argv)
    return run(args.width)


def run(width: int = 120, repo: Path = Path(".")) -> int:
    try:
        show = exp_show(repo)
    except (RuntimeError, json.JSONDecodeError) as exc:
        print(f"imgclass compare: {exc}", file=sys.stderr)
        return 1
    print(render(rows_from_show(show), width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
