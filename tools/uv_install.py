"""`pip install` for `make setup`, done by uv with this machine's pip configuration.

uv downloads, unpacks and compiles in parallel: `make setup` on a fresh clone takes 38 s against
100-105 s with pip, for torch with its CUDA libraries (about 3 GB) and the rest (docs/benchmarks.md).
uv does not read pip's configuration (pip.conf, PIP_* variables), so the settings that decide which
files are installed (indexes, wheel folders, constraints) are read from `pip config list` and passed
on. A setting with no uv equivalent sends the install to pip, with one line saying which; uv's own
failures (a resolution error, the network) are reported as they are: pip would fail the same way.

Usage: python tools/uv_install.py <pip install arguments>, the ones both installers take (--quiet,
-e, --no-deps, --dry-run, requirements). Standard library only: it runs before the install.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

# pip options (pip.conf keys) that take several values, and uv's name for them.
REPEATED = {
    "find-links": "--find-links",
    "extra-index-url": "--extra-index-url",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
SINGLE = {"index-url": "--index-url"}
SWITCHES = {"no-index": "--no-index"}
# pip options that uv takes from the environment.
ENVIRONMENT = {
    "cert": ("SSL_CERT_FILE",),
    "client-cert": ("SSL_CLIENT_CERT",),
    "proxy": ("HTTP_PROXY", "HTTPS_PROXY"),
}
# pip options that change how pip talks or looks, not which files are installed; config-file
# (PIP_CONFIG_FILE) names a file whose settings `pip config list` lists with the rest.
COSMETIC = {
    "config-file", "timeout", "default-timeout", "retries", "disable-pip-version-check", "progress-bar", "quiet",
    "verbose", "no-color", "no-input", "root-user-action", "cache-dir", "no-cache-dir",
}
# pip reads these sections for `pip install`; ':env:' is PIP_* variables, which override the files.
INSTALL_SECTIONS = ("global", "install", ":env:")


class NoUvEquivalent(ValueError):
    """A pip setting that uv cannot be given: the install goes to pip."""


def pip_settings(config_list: str) -> dict[str, str]:
    """`pip config list` output → {option: value} for `pip install`, later sections winning."""
    by_section: dict[str, dict[str, str]] = {}
    for line in config_list.splitlines():
        name, sep, quoted = line.partition("=")
        section, dot, option = name.rpartition(".")
        if not sep or not dot:
            continue
        by_section.setdefault(section, {})[option] = ast.literal_eval(quoted)
    settings: dict[str, str] = {}
    for section in INSTALL_SECTIONS:
        settings.update(by_section.get(section, {}))
    return settings


def is_true(value: str) -> bool:
    """A pip.conf switch's value as pip reads it."""
    return value.lower() in ("1", "true", "yes", "on")


def uv_arguments(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """pip's settings → (uv pip install arguments, environment variables for uv)."""
    # pip picks the best version across all its indexes; uv's default takes the first index that
    # has the package at all, which misses versions a local index lacks.
    args = ["--index-strategy", "unsafe-best-match"]
    # pip writes the .pyc files at install time, uv by default leaves them to the first import; where
    # PYTHONDONTWRITEBYTECODE is set (as on this machine) every process then compiles torch, mlflow and
    # the rest again: importing them took 12.8 s instead of 5.5 s.
    if not is_true(settings.get("no-compile", "false")):
        args.append("--compile-bytecode")
    env: dict[str, str] = {}
    for option, value in settings.items():
        if option == "no-compile":
            pass  # read above
        elif option in REPEATED:
            for item in value.split():
                args += [REPEATED[option], item]
        elif option in SINGLE:
            args += [SINGLE[option], value]
        elif option in SWITCHES:
            if is_true(value):
                args.append(SWITCHES[option])
        elif option in ENVIRONMENT:
            env.update(dict.fromkeys(ENVIRONMENT[option], value))
        elif option not in COSMETIC:
            raise NoUvEquivalent(option)
    return args, env


def install_with_pip(pip_args: list[str], reason: str) -> int:
    print(f"note: {reason}: installing with pip", file=sys.stderr)
    return subprocess.run([sys.executable, "-m", "pip", "install", *pip_args], check=False).returncode


def main(pip_args: list[str]) -> int:
    python = sys.executable
    if subprocess.run([python, "-m", "uv", "--version"], capture_output=True, check=False).returncode != 0:
        return install_with_pip(pip_args, "uv is not installed in this environment")
    config = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=True).stdout
    try:
        args, env = uv_arguments(pip_settings(config))
    except NoUvEquivalent as setting:
        return install_with_pip(pip_args, f"pip's setting '{setting}' has no uv equivalent")
    command = [python, "-m", "uv", "pip", "install", "--python", python, *args, *pip_args]
    return subprocess.run(command, check=False, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
