"""Stage machine: this machine's CPU, usable cores, GPUs and torch build, in reports/machine.json.
Always runs (dvc.yaml: always_changed) and is cheap; the benchmark depends on the file, so it reruns
only where the machine differs from the one recorded."""

import sys

from imgclass import files
from imgclass.benchmarking import machine


def main() -> int:
    facts = machine.describe()
    files.write_json("reports/machine.json", facts)
    print(f"machine: {machine.summary(facts)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
