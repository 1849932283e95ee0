"""The inference path (evaluate, predict, the served model) must not need training-only libraries."""

import subprocess
import sys

import pytest

BLOCK_KORNIA = """
import sys
class BlockKornia:
    def find_spec(self, name, path=None, target=None):
        if name == "kornia" or name.startswith("kornia."):
            raise ImportError(f"{name} is blocked: training-only library")
sys.meta_path.insert(0, BlockKornia())
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_KORNIA + code], capture_output=True, text=True, timeout=300)


def test_the_block_itself_works():
    proc = run_python("import imgclass.training.augment")
    assert proc.returncode != 0 and "kornia is blocked" in proc.stderr


@pytest.mark.slow
def test_inference_modules_import_without_kornia():
    proc = run_python("import imgclass.serving.predict, imgclass.model.checkpoint, imgclass.evaluation.evaluate, imgclass.model.preprocess\n"
                      "assert not any(m == 'kornia' or m.startswith('kornia.') for m in sys.modules)\n"
                      "print('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
