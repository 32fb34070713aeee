"""Staging folders (:func:`xbkg.io.outputs.all_or_nothing`) and those that killed jobs leave."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xbkg.errors import OutputError, OutputExistsError, XbkgWarning
from xbkg.io import outputs
from xbkg.io.outputs import STAGE_PREFIX, all_or_nothing, check_outputs

NAMES = ["a.txt", "b.txt"]


def write_names(stage: Path) -> None:
    for name in NAMES:
        (stage / name).write_text(name)


def ended_pid() -> int:
    """The number of a process of this host that has ended (and was reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def stage_folder(out: Path, pid: int, host: str | None = None) -> Path:
    """A staging folder as a process ``pid`` of ``host`` (default: this one) names it."""
    path = out / f"{STAGE_PREFIX}{pid}@{host or outputs._host()}-k3x_9q2z"
    path.mkdir(parents=True)
    (path / "a.txt").write_text("half written")
    return path


def test_the_staging_folder_names_its_process(tmp_path):
    seen = []

    def write(stage: Path) -> None:
        seen.append(stage.name)
        write_names(stage)

    all_or_nothing(tmp_path / "out", NAMES, False, write)
    assert seen[0].startswith(f"{STAGE_PREFIX}{os.getpid()}@{outputs._host()}-")
    assert [stage.pid for stage in outputs._Stage.find(tmp_path)] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == NAMES


def test_a_killed_jobs_staging_folder_is_removed_with_a_warning(tmp_path):
    out = tmp_path / "out"
    stale = stage_folder(out, ended_pid())
    with pytest.warns(XbkgWarning, match=rf"removed {stale.name}, left behind by xbkg process"):
        check_outputs(out, NAMES, False)  # not content: the folder counts as empty
    assert not stale.exists()
    stale = stage_folder(out, ended_pid())
    with pytest.warns(XbkgWarning, match="killed before it finished"):
        all_or_nothing(out, NAMES, False, write_names)
    assert sorted(p.name for p in out.iterdir()) == NAMES


def test_a_running_jobs_staging_folder_is_left_alone(tmp_path):
    out = tmp_path / "out"
    running = stage_folder(out, os.getppid())
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=rf"xbkg process {os.getppid()} on host .* may be "
                           rf"writing into this folder .*{running.name}"):  # fmt: skip
            all_or_nothing(out, NAMES, overwrite, write_names)
    assert (running / "a.txt").read_text() == "half written"
    assert [p.name for p in out.iterdir()] == [running.name]


def test_a_staging_folder_of_another_host_is_left_alone(tmp_path):
    out = tmp_path / "out"
    other = stage_folder(out, ended_pid(), host="elsewhere-7.example")
    with pytest.raises(OutputError, match=r"on host elsewhere-7\.example, which cannot be checked"):
        check_outputs(out, NAMES, True)
    assert other.is_dir()


def test_a_job_killed_while_moving_files_into_place_keeps_what_it_replaced(tmp_path):
    out = tmp_path / "out"
    stale = stage_folder(out, ended_pid())
    (stale / ".previous").mkdir()
    (stale / ".previous" / "b.txt").write_text("the old b")
    with pytest.raises(OutputError, match=r"killed while moving its files into place.*\.previous"):
        check_outputs(out, NAMES, True)
    assert (stale / ".previous" / "b.txt").read_text() == "the old b"


def test_other_hidden_folders_are_content(tmp_path):
    out = tmp_path / "out"
    (out / ".xbkg-abc123").mkdir(parents=True)  # not a name all_or_nothing gives
    with pytest.raises(OutputExistsError, match="not empty"):
        check_outputs(out, NAMES, False)
    check_outputs(out, NAMES, True)
    assert (out / ".xbkg-abc123").is_dir()


def test_a_host_name_with_dashes_is_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs.socket, "gethostname", lambda: "node-12.cluster_a")
    assert outputs._host() == "node-12.cluster_a"
    path = stage_folder(tmp_path, 4242)
    (stage,) = outputs._Stage.find(tmp_path)
    assert (stage.path, stage.pid, stage.host) == (path, 4242, "node-12.cluster_a")
    monkeypatch.setattr(outputs.socket, "gethostname", lambda: "odd name/with:signs")
    assert outputs._host() == "odd_name_with_signs"
