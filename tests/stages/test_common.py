"""What the training stages share (quantart_stages.common): --resume of a folder that is missing or holds no
run."""

from __future__ import annotations

import pytest
from cli_support import run_cli


def _one_error(err: str) -> None:
    assert "Traceback" not in err and "ValidationError" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err


@pytest.mark.parametrize("stage", ["train-vq", "train-sga"])
def test_resume_of_a_missing_folder_says_so(capsys, tmp_path, stage):
    missing = run_cli(capsys, stage, "--resume", str(tmp_path / "no-such-run"))
    assert missing.code == 3, missing.err
    assert "no-such-run" in missing.err and "does not exist" in missing.err and "needs --" not in missing.err
    _one_error(missing.err)
    (tmp_path / "empty").mkdir()
    empty = run_cli(capsys, stage, "--resume", str(tmp_path / "empty"))
    assert empty.code == 3 and "no training run" in empty.err and "needs --" not in empty.err, empty.err
    _one_error(empty.err)
