"""make setup's installer: uv with this machine's pip configuration, pip where uv has no equivalent."""

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "uv_install.py"
spec = importlib.util.spec_from_file_location("uv_install", TOOL)
uv_install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(uv_install)

# What `pip config list` printed on the machine this project is developed on.
MACHINE_CONFIG = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.disable-pip-version-check='1'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/srv/overridden-by-the-environment'
"""


def test_the_machines_pip_configuration_becomes_uv_arguments():
    args, env = uv_install.uv_arguments(uv_install.pip_settings(MACHINE_CONFIG))
    assert args[:3] == ["--index-strategy", "unsafe-best-match", "--compile-bytecode"]  # as pip does
    pairs = list(zip(args[3::2], args[4::2]))
    assert pairs == [
        ("--constraint", "/etc/xdg/pip/constraints.txt"),
        ("--extra-index-url", "file:///opt/pypi/simple"),
        ("--extra-index-url", "file:///opt/pypi-more/simple"),
        ("--find-links", "/opt/wheels"),  # PIP_FIND_LINKS wins over pip.conf, as in pip
    ]
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}


def test_sections_other_than_install_are_not_read_and_switches_follow_their_value():
    settings = uv_install.pip_settings(
        "download.dest='/tmp'\ninstall.no-index='true'\ninstall.index-url='https://mirror/simple'\n")
    assert settings == {"no-index": "true", "index-url": "https://mirror/simple"}
    args, _ = uv_install.uv_arguments(settings)
    assert args[3:] == ["--no-index", "--index-url", "https://mirror/simple"]
    args, _ = uv_install.uv_arguments({"no-index": "false", "no-compile": "true"})
    assert "--no-index" not in args and "--compile-bytecode" not in args


def test_a_setting_uv_cannot_take_is_named():
    with pytest.raises(uv_install.NoUvEquivalent, match="prefer-binary"):
        uv_install.uv_arguments(uv_install.pip_settings("global.prefer-binary='true'\n"))


def tiny_wheel(folder: Path) -> Path:
    folder.mkdir()
    wheel = folder / "imgclass_tinypkg-1.0-py3-none-any.whl"
    info = "imgclass_tinypkg-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("imgclass_tinypkg/__init__.py", "")
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: imgclass-tinypkg\nVersion: 1.0\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                          "Tag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def run_tool(tmp_path: Path, pip_conf: str, *pip_args: str) -> subprocess.CompletedProcess:
    """The tool under a pip configuration of the test's own: no PIP_* variables, one pip.conf."""
    (tmp_path / "pip.conf").write_text(pip_conf)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = str(tmp_path / "pip.conf")
    return subprocess.run([sys.executable, str(TOOL), *pip_args], env=env, capture_output=True, text=True,
                          check=False)


def test_uv_installs_a_package_only_pips_configuration_points_to_compiled_as_pip_would(tmp_path):
    wheels = tiny_wheel(tmp_path / "wheels").parent
    conf = f"[global]\nno-index = true\nfind-links = {wheels}\n"
    done = run_tool(tmp_path, conf, "--dry-run", "imgclass-tinypkg==1.0")
    assert done.returncode == 0, done.stderr
    assert "+ imgclass-tinypkg==1.0" in done.stderr  # uv's dry-run plan, not pip's "Would install"
    assert "installing with pip" not in done.stderr

    site = tmp_path / "site"  # a target folder: the test leaves the project's environment alone
    done = run_tool(tmp_path, conf, "--target", str(site), "imgclass-tinypkg==1.0")
    assert done.returncode == 0, done.stderr
    assert list((site / "imgclass_tinypkg" / "__pycache__").glob("__init__.*.pyc"))

    # Without the configuration the package is nowhere: the success above came from it.
    missing = run_tool(tmp_path, "[global]\nno-index = true\n", "--dry-run", "imgclass-tinypkg==1.0")
    assert missing.returncode != 0
    assert "imgclass-tinypkg" in missing.stderr


def test_a_setting_uv_lacks_sends_the_install_to_pip_with_one_line(tmp_path):
    wheels = tiny_wheel(tmp_path / "wheels").parent
    conf = f"[global]\nno-index = true\nfind-links = {wheels}\nprefer-binary = true\n"
    done = run_tool(tmp_path, conf, "--dry-run", "imgclass-tinypkg==1.0")
    assert done.returncode == 0, done.stderr
    assert "note: pip's setting 'prefer-binary' has no uv equivalent: installing with pip" in done.stderr
    assert "Would install imgclass-tinypkg-1.0" in done.stdout
