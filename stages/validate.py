"""Stage validate: decode every raw file once, keep a working copy of each usable image in data/clean
(downscaled to validate.working_size), report the rest."""

import sys
from pathlib import Path

from imgclass import files
from imgclass.config.params import load_params
from imgclass.data import validate


def main() -> int:
    params = load_params()
    try:
        summary = validate.validate_tree(Path("data/raw"), Path("data/clean"), params.validate, params.classes,
                                         working_size=params.working_size)
    except (FileNotFoundError, ValueError) as exc:  # missing SRC, nothing accepted, bad layout
        print(f"validate: {exc}", file=sys.stderr)
        return 1
    files.write_json("metrics/validate.json", {"accepted": summary["accepted"]})  # the number runs compare
    files.write_json("reports/validate.json", summary)  # by status, by reason, per class, near-duplicates
    print(validate.summary_line(summary, params.working_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
