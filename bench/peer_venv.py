"""The peer's own interpreter: ``bench/.peer-venv`` with quixstreams (GitHub issue 19).

quixstreams 3.28 requires confluent-kafka<2.16 and pydantic-settings<2.16, while eventpipe needs
confluent-kafka>=2.16: the peer (``bench.peer_quix``) cannot run in the project's venv. The
first agents stage that needs it creates this venv with the same Python and pip-installs
``REQUIREMENTS`` from PyPI; a marker file holding them makes later runs skip the install, and a
change to them reinstalls. The directory is gitignored; ``rm -rf bench/.peer-venv`` resets it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

QUIXSTREAMS = "3.28.1"
REQUIREMENTS = (
    f"quixstreams=={QUIXSTREAMS}",
    "fastavro>=1.13,<2",
    "orjson>=3.13,<4",
    "prometheus-client>=0.26,<1",
)
"""What ``bench.peer_quix`` imports (and under it ``eventpipe.event``: orjson;
``eventpipe.codec``: fastavro, prometheus-client)."""
VENV = Path(__file__).resolve().parent / ".peer-venv"
MARKER = VENV / ".installed"


def python(say: Callable[[str], None], log: Path) -> Path:
    """The peer venv's interpreter, created and installed first if needed (output to ``log``).
    Raises ``RuntimeError`` naming the log when the venv cannot be made (e.g. PyPI unreachable).
    """
    exe = VENV / "bin" / "python"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if exe.exists() and MARKER.exists() and MARKER.read_text() == wanted:
        return exe
    say(f"agents peer: installing quixstreams {QUIXSTREAMS} into {VENV.name} (once)")
    shutil.rmtree(VENV, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(VENV)],
        [str(exe), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
    ]
    with log.open("ab") as out:
        for step in steps:
            done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(step[:4])} exited {done.returncode}; see {log}")
    MARKER.write_text(wanted)
    return exe
