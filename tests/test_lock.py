"""One writer per directory: the lock a process holds while it writes a run or a study."""

import os
import shutil
import signal
import subprocess
import sys

import pytest

from lit_activations import lock

HOLD_IN_ANOTHER_PROCESS = "import sys, time; from lit_activations import lock; lock.hold(sys.argv[1]); print('held', " \
    "flush=True); time.sleep(60)"  # fmt: skip


def test_a_directory_held_by_another_live_process_names_it_and_a_dead_ones_lock_is_taken_over(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_IN_ANOTHER_PROCESS, str(run)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(lock.Held) as held:
        lock.hold(run)
    assert held.value.holder == f"pid {holder.pid} on {os.uname().nodename}"
    os.kill(holder.pid, signal.SIGKILL)  # however it ends, the system drops its lock
    holder.wait()
    assert lock.hold(run) == f"pid {holder.pid} on {os.uname().nodename}"  # the dead holder, said once
    assert lock.hold(run) == ""  # held by this process already
    lock.release(run)
    assert lock.hold(run) == "" and (run / ".lock").read_text() == f"pid {os.getpid()} on {os.uname().nodename}"
    lock.release(run)
    assert (run / ".lock").read_text() == ""  # released: no holder to report


def test_a_directory_that_cannot_be_written_is_found_without_writing_anything(tmp_path):
    (tmp_path / "a_file").touch()
    assert lock.unwritable(tmp_path / "a_file") == f"{tmp_path / 'a_file'} is a file, not a directory"
    assert lock.unwritable(tmp_path / "a_file" / "logs") == f"{tmp_path / 'a_file'} is a file, not a directory"
    assert lock.unwritable(tmp_path / "new" / "logs") == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing made, nothing left


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("capsh") is None, reason="needs capsh (libcap) to run the fit without root's override")
def test_a_fit_into_a_read_only_directory_is_one_line_even_for_root(tmp_path):
    """Root writes where permissions say no one may: the check tries to write, so it meets what a user would."""
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    fit = f"{sys.executable} -m lit_activations fit --trainer.logger.init_args.save_dir={read_only / 'logs'}"
    without_override = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", fit]
    result = subprocess.run(without_override, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: invalid trainer.logger.save_dir {read_only / 'logs'}: cannot write in {read_only}: Permission denied"
        " (see --help)"
    ]
    assert list(read_only.iterdir()) == []


def test_a_dead_holders_directory_is_not_taken_while_a_process_that_worked_for_it_lives(tmp_path):
    study = tmp_path / "study"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_IN_ANOTHER_PROCESS, str(study)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    join = "import sys, time; from lit_activations import lock; lock.join(sys.argv[1]); print('joined', flush=True);" \
        " time.sleep(60)"  # fmt: skip
    fit = subprocess.Popen([sys.executable, "-c", join, str(study)], stdout=subprocess.PIPE, text=True)
    assert fit.stdout.readline().strip() == "joined"  # as a study's fit does
    holder.kill()  # the study's own process, killed: its fit is still ending
    holder.wait()
    with pytest.raises(lock.Held) as held:
        lock.hold(study)
    assert (
        held.value.holder == f"the processes of pid {holder.pid} on {os.uname().nodename}, which is gone, still ending"
    )
    fit.kill()
    fit.wait()
    assert lock.hold(study) == f"pid {holder.pid} on {os.uname().nodename}"  # now it is taken over
    lock.release(study)
