"""A job's files (page/jobs.py): step pictures written once per step, every file readable by this user only."""

from __future__ import annotations

import os
import stat

import numpy as np

from negprompt_demo.page.jobs import JobFiles, StepFiles


def test_step_pictures_are_written_once_per_step(tmp_path):
    picture = np.zeros((8, 8, 3), np.uint8)
    first = StepFiles(tmp_path / "pictures", "3-None").png(picture, "x0_with")
    written = open(first, "rb").read()
    again = StepFiles(tmp_path / "pictures", "3-None").png(picture + 1, "x0_with")  # other pixels, same step
    assert again == first and open(first, "rb").read() == written  # the first file, not rewritten
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600
    assert len(list((tmp_path / "pictures").iterdir())) == 1


def test_job_files_are_readable_by_this_user_only(tmp_path):
    path = JobFiles(tmp_path).png(np.zeros((8, 8, 3), np.uint8), "image")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
