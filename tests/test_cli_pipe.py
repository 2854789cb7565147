"""`kss ... | head`: a reader that goes away early ends the command quietly (no traceback), as other CLI tools do."""

from __future__ import annotations

import os
import subprocess
import sys


def test_closed_stdout_pipe_gives_no_traceback():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = "import sys; from kss_lora.cli import entry; sys.argv = ['kss', 'sweep', '--list']; entry()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line is written
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err.decode() and "BrokenPipeError" not in err.decode()
    assert proc.returncode == 141
