"""Training that survives a lost worker or machine (issue 41): torchrun restarts the ranks from the newest step
checkpoint to the weights of a run that never failed, the logs hold every step once, and nothing of a killed rank
or launcher is left running."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from small_model import DDP_RUN, SMALL_MODEL
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qslr.deploy.serving.processes import child_processes
from qslr.model.checkpoints import save_file
from qslr.pipelines.atomic_output import partial_path
from qslr.tools.cli import cli
from qslr.train.checkpoint_files import (
    KEPT_STEP_CHECKPOINTS,
    drop_step_checkpoints_after,
    keep_as_step_checkpoint,
    newest_loadable,
    step_checkpoints,
)
from qslr.train.checkpointing import load_training_checkpoint
from qslr.train.config import load_config
from qslr.train.data import make_loader
from qslr.train.elastic import describe_failures
from qslr.train.metrics_log import STEP_LOSS_TAG, read_metrics

REPO = Path(__file__).resolve().parents[2]
FAULTY_RANK = REPO / "tests" / "resources" / "faulty_rank.py"
_spec = importlib.util.spec_from_file_location("faulty_rank", FAULTY_RANK)
faulty_rank = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faulty_rank)  # its helpers only: the faults are injected when it runs as a script

# The session's straight run's settings (small_model.DDP_RUN): 4 steps an epoch on two ranks, 8 in the run, the
# reference loader's processes in each rank.
RUN = DDP_RUN
EVERY_2_STEPS = "train.checkpoint_every_steps=2"
# The restarts need torchrun not to share its store with the workers (train/elastic.py, UNSHARED_STORE); one thread
# per rank, as torchrun sets where it starts several ranks, so that two launchers of one rank compute alike.
TORCHRUN_ENV = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "OMP_NUM_THREADS": "1"}
# Metrics columns a run that resumes exactly must repeat (times and throughput are each attempt's own).
EXACT_COLUMNS = ("epoch", "global_step", "lr", "train_loss", "loss_SeqCTC", "loss_ConvCTC", "loss_Dist",
                 "skipped_batches", "dev_wer", "dev_wer_conv")


def overrides(root: Path, work: Path, *extra: str) -> list[str]:
    return ["--config", "synthetic", f"data.root={root}", f"train.work_dir={work}", *RUN, *extra]


PAUSE_SITE = REPO / "tests" / "resources" / "pause_site"


def paused_after(rank: str, step: int, environment: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which torchrun's worker ``rank`` (`*`: the launcher's any) of the job's first attempt holds
    after optimiser step ``step`` until killed (tests/resources/pause_site)."""
    environment = dict(os.environ if environment is None else environment)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PAUSE_SITE), environment.get("PYTHONPATH")]))
    environment["QSLR_PAUSE_AFTER_STEP"] = f"{rank}:{step}"
    return environment


def qslr_train(*args: str, environment: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qslr.tools.cli", "train", *args], cwd=REPO, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def digests(output: str) -> dict[str, str]:
    return dict(re.findall(r"rank (\d) finished at step \d+ with weights digest (\w+)", output))


def left_running(started: dict[str, str]) -> list[int]:
    """Which of the processes {pid: start time} still run (a zombie has ended)."""
    running = []
    for pid, start in started.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[19] == start and fields[0] != "Z":
            running.append(int(pid))
    return running


def processes_of(pid: int) -> dict[str, str]:
    """{pid: start time} of a process and every process under it."""
    return {str(p): faulty_rank.start_time(p) for p in [pid, *faulty_rank.descendants(pid)]}


def none_left(started: dict[str, str], seconds: float = 10) -> bool:
    """Whether all of the processes {pid: start time} end within ``seconds``; those that do not are killed, so that a
    failing test leaves nothing behind either."""
    deadline = time.monotonic() + seconds
    while (running := left_running(started)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in running:
        os.kill(pid, signal.SIGKILL)
    return not running


def step_losses(work: Path) -> list[tuple[int, float]]:
    """The training loss of each step, as TensorBoard shows the run (later attempts hide what they redo)."""
    events = EventAccumulator(str(work / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(STEP_LOSS_TAG)]


def assert_logs_equal(work: Path, straight: Path) -> None:
    """metrics.csv and TensorBoard hold every step once, with the values of the run that never failed."""
    rows, expected = read_metrics(work / "metrics.csv"), read_metrics(straight / "metrics.csv")
    assert [[row[c] for c in EXACT_COLUMNS] for row in rows] == [[row[c] for c in EXACT_COLUMNS] for row in expected]
    assert step_losses(work) == step_losses(straight)
    assert [step for step, _ in step_losses(work)] == list(range(1, 9))


@pytest.fixture
def straight_run(ddp_straight_run) -> tuple[str, Path]:
    """The session's two ranks trained without a failure and without step checkpoints: (output, work_dir)."""
    output, work = ddp_straight_run
    assert len(set(digests(output).values())) == 1 and len(digests(output)) == 2, output
    return output, work


# --- processes ----------------------------------------------------------------------------------------------


PARENT = """
import os, sys, time
from qslr.pipelines.process_lifetime import end_with
parent = os.getpid()
if os.fork() == 0:
    end_with(parent)
    time.sleep(600)
print(os.getpid(), flush=True)
time.sleep(600)
"""


def test_a_process_bound_to_another_ends_when_that_one_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert int(parent.stdout.readline()) == parent.pid
        wait_for_children(parent.pid, 1)
        started = processes_of(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert none_left(started)
    finally:
        parent.kill()


def wait_for_children(pid: int, count: int, seconds: float = 60) -> list[int]:
    deadline = time.monotonic() + seconds
    while len(found := faulty_rank.descendants(pid)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(found) >= count, f"{pid} started {found}"
    return found


LOADER_OWNER = """
import signal, sys
from qslr.train.config import load_config
from qslr.train.data import make_loader
signal.signal(signal.SIGTERM, lambda signum, frame: print("SIGTERM", flush=True))  # a rank stops at its next step
config = load_config("synthetic", sys.argv[1:])
batches = iter(make_loader(config, "train", train=True))
next(batches)
print("read a batch", flush=True)
sys.stdin.readline()
next(batches)
print("read another", flush=True)
if sys.stdin.readline().strip() == "exit":
    sys.exit(0)
"""


@pytest.mark.parametrize("end", ["SIGKILL", "exit"])
@pytest.mark.slow
def test_the_reference_loaders_processes_leave_a_sigterm_to_their_owner_and_end_with_it(tiny_corpus, tmp_path, end):
    """The issue's report, without torchrun: SIGKILL of the process left its loader's fork server and workers
    running; here they are gone within seconds, as they are when it exits. Before that, a SIGTERM to its whole
    process group (torchrun's stop) leaves the workers to the owner, which reads on to its next step."""
    config = [f"data.root={tiny_corpus[0]}", f"train.work_dir={tmp_path}", *SMALL_MODEL, "data.loader=reference",
              "data.num_workers=2"]
    owner = subprocess.Popen([sys.executable, "-c", LOADER_OWNER, *config], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert owner.stdout.readline().strip() == "read a batch"
        started = processes_of(owner.pid)
        # The owner, its resource tracker, the fork server and the two workers it forked.
        assert len(started) >= 5, started
        os.killpg(owner.pid, signal.SIGTERM)
        assert owner.stdout.readline().strip() == "SIGTERM"
        owner.stdin.write("\n")
        owner.stdin.flush()
        assert owner.stdout.readline().strip() == "read another"
        if end == "SIGKILL":
            os.kill(owner.pid, signal.SIGKILL)
        else:
            owner.stdin.write("exit\n")
            owner.stdin.flush()
        assert owner.wait(timeout=60) == (-signal.SIGKILL if end == "SIGKILL" else 0)
        assert none_left(started)
    finally:
        owner.kill()


def test_the_dali_loader_starts_no_process(tiny_corpus, tmp_path):
    """DALI decodes in threads of the process that reads it: nothing of it can outlive that process."""
    config = load_config("synthetic", [f"data.root={tiny_corpus[0]}", f"train.work_dir={tmp_path}", *SMALL_MODEL,
                                       "data.loader=dali"])
    before = set(child_processes(os.getpid()))
    loader = make_loader(config, "train", train=True)
    assert next(iter(loader)).videos.shape[0] == 2
    assert set(child_processes(os.getpid())) <= before


# --- checkpoint files ---------------------------------------------------------------------------------------


def test_step_checkpoints_keep_the_newest_and_a_resume_passes_over_an_unreadable_last_pt(checkpoint, tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    data = load_training_checkpoint(checkpoint)
    for step in (2, 4, 6):
        save_file(folder / "last.pt", {**data, "training": {**data["training"], "global_step": step}})
        kept = keep_as_step_checkpoint(folder, step)
        assert kept.stat().st_ino == (folder / "last.pt").stat().st_ino  # a second name, not a second write
    assert [step for step, _ in step_checkpoints(folder)] == [6, 4][:KEPT_STEP_CHECKPOINTS]
    path, read = newest_loadable(folder, load_training_checkpoint)
    assert path == folder / "last.pt" and read["training"]["global_step"] == 6
    # A last.pt that a storage fault cut short: the newest step checkpoint that reads is taken instead.
    (folder / "last.pt").unlink()
    (folder / "last.pt").write_bytes((folder / "step6.pt").read_bytes()[:1000])
    (folder / "step6.pt").write_bytes(b"")
    path, read = newest_loadable(folder, load_training_checkpoint)
    assert path == folder / "step4.pt" and read["training"]["global_step"] == 4
    drop_step_checkpoints_after(folder, 4)
    assert [step for step, _ in step_checkpoints(folder)] == [4]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_disk_that_fills_during_a_checkpoint_stops_the_run_with_one_line_and_keeps_the_previous_one(tiny_corpus,
                                                                                                     tmp_path):
    work = tmp_path / "run"
    common = ["--config", "synthetic", f"data.root={tiny_corpus[0]}", f"train.work_dir={work}", *SMALL_MODEL]
    first = CliRunner().invoke(cli, ["train", *common, "train.max_steps=1"])
    assert first.exit_code == 0, first.output
    # Where the next checkpoint is written before it is renamed into place: a device that is always full.
    staged = partial_path(work / "checkpoints" / "last.pt")
    staged.symlink_to("/dev/full")
    full = CliRunner().invoke(cli, ["train", "--resume", "auto", *common, "train.max_steps=3",
                                    "train.checkpoint_every_steps=1"])
    assert full.exit_code == 1
    assert full.output.strip().splitlines()[-1] == (f"Error: {work / 'checkpoints' / 'last.pt'}: cannot write the "
                                                    "checkpoint (No space left on device); the run stops, and the "
                                                    "checkpoint written before stays")
    assert load_training_checkpoint(work / "checkpoints" / "last.pt")["training"]["global_step"] == 1
    assert not staged.exists() and not staged.is_symlink()


def test_the_restart_cause_names_each_failed_rank_in_the_order_torchrun_saw_them():
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    failures = {1: ProcessFailure(local_rank=1, pid=41, exitcode=-signal.SIGKILL, error_file=""),
                0: ProcessFailure(local_rank=0, pid=40, exitcode=1, error_file="")}
    at = time.strftime("%H:%M:%S", time.localtime(failures[1].timestamp))
    assert describe_failures(failures) == (f"rank 1 (pid 41 on {socket.gethostname()}) was killed by SIGKILL at {at}; "
                                           f"then rank 0 (pid 40 on {socket.gethostname()}) exited with code 1 at {at}")


# --- torchrun restarts --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_of_rank_0_at_a_random_step_restarts_to_the_weights_of_a_run_that_never_failed(tiny_corpus, tmp_path,
                                                                                              straight_run):
    output, straight = straight_run
    work = tmp_path / "killed"
    stop_at = random.choice([1, 2, 3, 5, 6, 7])  # inside an epoch of 4 steps
    # Rank 0 holds after that step until killed: the kill lands there however fast the run goes.
    process = qslr_train("--nproc", "2", "--max-restarts", "1", *overrides(tiny_corpus[0], work, EVERY_2_STEPS),
                         environment=paused_after("0", stop_at))
    seen = []
    for line in process.stdout:
        seen.append(line)
        if f"paused after step {stop_at}" in line:
            break
    rank_0 = int(re.search(r"\[rank (\d+)\] rank 0 of 2 joined", "".join(seen)).group(1))
    started = processes_of(rank_0)
    assert len(started) >= 4, started  # the rank, its resource tracker, fork server and loader worker
    os.kill(rank_0, signal.SIGKILL)
    restarted = "".join(seen) + process.communicate(timeout=300)[0]
    assert process.returncode == 0, restarted
    assert digests(restarted) == digests(output), f"killed after step {stop_at}:\n{restarted}"
    assert re.search(rf"torchrun job \S+ restarted its workers \(restart 1 of at most 1\): rank 0 \(pid {rank_0} on "
                     rf"\S+\) was killed by SIGKILL at \d\d:\d\d:\d\d", restarted), restarted
    assert none_left(started)
    assert_logs_equal(work, straight)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_while_a_checkpoint_is_written_then_a_rank_stuck_in_a_collective(tiny_corpus, tmp_path, straight_run):
    """One job, two restarts: rank 0 killed halfway through writing step 6's checkpoint (the restart continues from
    step 4's), then, in the next attempt, rank 1 stuck after step 7 until the collective timeout ends it."""
    output, straight = straight_run
    work, record = tmp_path / "faults", tmp_path / "killed.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=2",
               str(FAULTY_RANK), *overrides(tiny_corpus[0], work, EVERY_2_STEPS)]
    # 15 s: long enough for ranks that start seconds apart on a busy machine, short enough for a test.
    environment = {**TORCHRUN_ENV, "QSLR_FAULTS": "kill-while-saving:0:6,stuck-in-collective:1:7",
                   "QSLR_FAULT_RECORD": str(record), "QSLR_COLLECTIVE_TIMEOUT_MIN": "0.25"}
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=500)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert digests(log) == digests(output), log
    assert re.findall(r"restarted its workers \(restart (\d) of at most 2\)", log) == ["1", "2"], log
    # Each restart's two ranks, from the step before the one whose checkpoint was cut short, then from step 6.
    assert re.findall(r"resuming from \S+ at epoch \d, batch \d \(step (\d)\)", log) == ["4", "4", "6", "6"], log
    assert none_left(json.loads(record.read_text()))
    assert not list((work / "checkpoints").glob(".*partial*"))
    assert_logs_equal(work, straight)


# --- two machines: two launchers on this one ----------------------------------------------------------------

# Quick to see a launcher gone and to close a round without it; 10 s for both to join the first round on a busy
# machine (a launcher that joins later restarts the other's ranks: a restart the tests do not want).
RENDEZVOUS_CONF = "last_call_timeout=10,keep_alive_interval=1,keep_alive_max_attempt=2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Machines:
    """torchrun launchers of one rank each, one per 'machine', meeting at a c10d rendezvous on 127.0.0.1."""

    def __init__(self, nnodes: str, arguments: list[str], folder: Path):
        self.nnodes, self.arguments, self.folder = nnodes, arguments, folder
        self.port = free_port()
        self.launched: dict[str, subprocess.Popen] = {}

    def launch(self, name: str, environment: dict[str, str] = TORCHRUN_ENV) -> subprocess.Popen:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={self.nnodes}", "--nproc-per-node=1",
                   "--max-restarts=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{self.port}",
                   "--rdzv-id=two-machines", f"--rdzv-conf={RENDEZVOUS_CONF}", "-m", "qslr.train", *self.arguments]
        with (self.folder / f"{name}.log").open("w") as log:
            self.launched[name] = subprocess.Popen(command, cwd=REPO, env=environment, stdout=log,
                                                   stderr=subprocess.STDOUT)
        return self.launched[name]

    def launch_both(self, hold_b_after_step: int) -> None:
        """The first hosts the rendezvous store, whose launcher must survive (c10d's limit): the one killed later
        is started once it serves. B's rank holds after ``hold_b_after_step`` until B is killed (its peer waits in
        the next collective), so that the kill lands inside the run however fast it goes."""
        self.launch("A")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            time.sleep(0.2)
        self.launch("B", paused_after("*", hold_b_after_step, TORCHRUN_ENV))

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def wait_for(self, pattern: str, seconds: float = 300) -> None:
        deadline = time.monotonic() + seconds
        while not any(re.search(pattern, self.log(name)) for name in self.launched):
            assert time.monotonic() < deadline, "\n".join(self.log(name) for name in self.launched)
            time.sleep(0.2)

    def kill(self, name: str) -> dict[str, str]:
        """SIGKILL of a launcher, as a machine is lost; the processes it had started."""
        started = processes_of(self.launched[name].pid)
        assert len(started) >= 3, started  # the launcher, its rank and the rank's loader processes
        os.kill(self.launched[name].pid, signal.SIGKILL)
        self.launched[name].wait(timeout=30)
        return started

    def finish(self, *names: str) -> str:
        for name in names:
            assert self.launched[name].wait(timeout=400) == 0, self.log(name)
        return "".join(self.log(name) for name in names)

    def stop(self) -> None:
        for process in self.launched.values():
            process.kill()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_machine_killed_and_started_again_rejoins_and_the_job_ends_with_the_weights_of_a_run_that_never_failed(
        tiny_corpus, tmp_path, straight_run):
    output, straight = straight_run
    machines = Machines("2", overrides(tiny_corpus[0], tmp_path / "work", EVERY_2_STEPS), tmp_path)
    try:
        machines.launch_both(hold_b_after_step=5)
        machines.wait_for(r"paused after step 5")
        started = machines.kill("B")
        assert none_left(started)
        machines.launch("B again")
        log = machines.finish("A", "B again")
    finally:
        machines.stop()
    assert digests(log) == digests(output), log
    assert re.search(r"restarted its workers \(restart 1 of at most 1\)", log), log
    assert_logs_equal(tmp_path / "work", straight)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_with_nnodes_1_to_2_the_surviving_machine_goes_on_alone(tiny_corpus, tmp_path):
    machines = Machines("1:2", overrides(tiny_corpus[0], tmp_path / "work", EVERY_2_STEPS), tmp_path)
    try:
        machines.launch_both(hold_b_after_step=5)
        machines.wait_for(r"paused after step 5")
        assert none_left(machines.kill("B"))
        log = machines.finish("A")
    finally:
        machines.stop()
    # Step 4's or 6's checkpoint, of two ranks: the survivor continues that epoch from the same sample.
    assert re.search(r"written by 2 rank\(s\), this run has 1: continuing epoch 1 from sample \d+", log), log
    assert re.search(r"rank 0 finished at step \d+", log), log
