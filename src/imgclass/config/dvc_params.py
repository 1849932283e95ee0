"""What `dvc repro` needs from params.yaml, and writing what a short file leaves to defaults.

imgclass accepts a params.yaml with only the sections a user cares about (params.py fills in the
rest), but DVC reads the file itself: a stage that declares `split` as a parameter stops with
"Parameters 'split' are missing from 'params.yaml'" when the section is absent. `missing_keys`
names those keys; `fill_missing` appends them with their defaults, leaving the user's text as it is.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from imgclass.config.params import Params, ParamsError, parse_params

DVC_YAML = Path("dvc.yaml")
FILL_HEADER = "# Defaults for keys dvc.yaml declares, written by `imgclass check-params --fill`; edit freely.\n"


def declared_keys(dvc_yaml: Path, raw: dict) -> list[str]:
    """Dotted params.yaml keys the stages declare, each `foreach: ${models}` expanded over raw models."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")).get("stages", {})
    keys: list[str] = []
    for stage in stages.values():
        body = stage.get("do", stage)
        items = list(raw.get("models") or {}) if "foreach" in stage else [None]
        for item in items:
            for entry in body.get("params", []):
                names = [entry] if isinstance(entry, str) else _keys_of_file_entry(entry)
                for name in names:
                    key = name.replace("${key}", item) if item else name
                    if key not in keys:
                        keys.append(key)
    return keys


def _keys_of_file_entry(entry: dict) -> list[str]:
    """`- other.yaml: [a, b]` entries name another file; only params.yaml is ours to fill."""
    file, names = next(iter(entry.items()))
    return list(names or []) if file == "params.yaml" else []


def missing_keys(raw: dict, dvc_yaml: Path = DVC_YAML) -> list[str]:
    """Declared keys absent from the raw params mapping, in dvc.yaml's order; a nested key whose whole
    section is absent is named by the section (filling the section fills it)."""
    absent = [key for key in declared_keys(dvc_yaml, raw) if not _has_key(raw, key)]
    return list(dict.fromkeys(key.split(".")[0] if key.split(".")[0] not in raw else key for key in absent))


def _has_key(raw: dict, dotted: str) -> bool:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def defaults_for(keys: list[str], params: Params) -> dict:
    """{top-level key: its value with every default filled in}. A nested key (`review.image_size`)
    inside a section the file has cannot be appended: the error says what to add."""
    full = params.model_dump(mode="json", by_alias=True)
    nested = [k for k in keys if "." in k]
    if nested:
        section, _, name = nested[0].partition(".")
        default = full[section][name] if isinstance(full.get(section), dict) and name in full[section] else None
        hint = f"; add `{name}: {yaml.safe_dump(default, default_flow_style=True).strip().removesuffix('...').strip()}` " \
               f"to its `{section}:` section" if default is not None else "; add it to the file"
        raise ParamsError(f"params.yaml: {nested[0]} is declared by dvc.yaml but missing{hint}")
    return {key: full[key] for key in keys}


def fill_missing(params_path: Path, dvc_yaml: Path = DVC_YAML) -> list[str]:
    """Append the missing declared keys with their defaults; return them. The file must be valid."""
    text = Path(params_path).read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    params = parse_params(raw, source=str(params_path))  # never fill a file that is wrong
    keys = missing_keys(raw, dvc_yaml)
    if keys:
        from imgclass import files  # late: only writing needs it

        block = yaml.safe_dump(defaults_for(keys, params), sort_keys=False, default_flow_style=None)
        separator = "" if text.endswith("\n") or not text else "\n"
        files.write_text(params_path, f"{text}{separator}\n{FILL_HEADER}{block}")
    return keys
