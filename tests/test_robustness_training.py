"""Issue 16 (training processes): SIGTERM / Ctrl-C stop with a checkpoint and one line, workers die with
their launcher, one run per --output_dir, a taken port is a clear error. Real `train.py` subprocesses on
TINY_GRAM at 16x16 with a small discriminator."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import posed_image_folder

import train as train_script
from training.checkpointing import latest_paths
from training.control import OutputDirBusy, OutputDirLock, check_output_dir_free
from training.launch import resolve_port
from utils.checkpoints import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# train.py with TINY_GRAM's discriminator narrowed (the official ladder is 6x slower at 16x16).
RUNNER = f"""
import sys, torch
sys.path.insert(0, {REPO!r})
torch.set_num_threads(1)
import configs, train
official = configs.get_config
def narrow(name):
    config = official(name)
    config['discriminator']['kwargs'] = {{'img_size': 16, 'max_channels': 32}}
    return config
configs.get_config = narrow
sys.exit(train.main(sys.argv[1:]))
"""


def data_folder(root, count=8):
    return posed_image_folder(root, count)


def start(tmp_path, out, *extra, new_session=False, runner=RUNNER):
    arguments = ['--config', 'TINY_GRAM', '--data_dir', data_folder(tmp_path / 'data'), '--output_dir', str(out),
                 '--total_step', '100000', '--save_interval', '100000', '--sample_interval', '100000',
                 '--num_workers', '0', *extra]
    log = open(tmp_path / 'train.log', 'w+')
    process = subprocess.Popen([sys.executable, '-c', runner, *arguments], stdout=log, stderr=subprocess.STDOUT,
                               cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS='1'), start_new_session=new_session)
    return process, log


def output(log):
    log.flush()
    log.seek(0)
    return log.read()


def wait_for(condition, process, log, seconds=120):
    deadline = time.time() + seconds
    while not condition():
        assert process.poll() is None, output(log)
        assert time.time() < deadline, output(log)
        time.sleep(0.1)


def steps_done(out):
    path = os.path.join(out, 'scalars.jsonl')
    if not os.path.isfile(path):
        return 0
    with open(path) as stream:
        return sum('"d_loss"' in line for line in stream)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f'/proc/{pid}/stat') as stream:  # a zombie is dead; it only waits for its parent's wait()
        return stream.read().rsplit(')', 1)[1].split()[0] != 'Z'


def training_processes(launcher):
    """The launcher's spawned ranks (not multiprocessing's resource tracker)."""
    with open(f'/proc/{launcher}/task/{launcher}/children') as stream:
        pids = [int(child) for child in stream.read().split()]
    ranks = []
    for pid in pids:
        with open(f'/proc/{pid}/cmdline', 'rb') as stream:
            if b'spawn_main' in stream.read():
                ranks.append(pid)
    return ranks


def lock_holder(out):
    path = os.path.join(out, '.train.lock')
    return os.path.isfile(path) and open(path).read().strip() != ''


@pytest.mark.parametrize('signum, code', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_one_line(tmp_path, signum, code):
    out = tmp_path / 'run'
    process, log = start(tmp_path, out)
    wait_for(lambda: steps_done(out) >= 2, process, log)
    process.send_signal(signum)
    assert process.wait(timeout=60) == code, output(log)
    text = output(log)
    step = load_file(latest_paths(out)['generator'])['step']
    assert step >= 2 and f"stopped at step {step}; run the same command to resume" in text
    assert 'Traceback' not in text and 'KeyboardInterrupt' not in text
    assert all(load_file(path)['step'] == step for path in latest_paths(out).values())

    if signum == signal.SIGINT:
        return
    # The same command continues from there.
    process, log = start(tmp_path / 'again', out, '--total_step', str(step + 1))
    assert process.wait(timeout=120) == 0, output(log)
    assert f'resumed from latest files in {out} at step {step}' in output(log)


@pytest.mark.parametrize('signum, code', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_data_workers_too_still_stops_cleanly(tmp_path, signum, code):
    # `pkill -f train.py`, a scheduler signalling the whole job and Ctrl-C in a terminal signal the
    # data-loader workers too; a worker killed by SIGTERM made the DataLoader raise "worker killed by
    # signal" instead of the loop stopping with a checkpoint.
    out = tmp_path / 'run'
    process, log = start(tmp_path, out, '--num_workers', '2', new_session=True)
    wait_for(lambda: steps_done(out) >= 2, process, log)
    os.killpg(process.pid, signum)  # the whole process group: the training process and its workers
    assert process.wait(timeout=60) == code, output(log)
    text = output(log)
    step = load_file(latest_paths(out)['generator'])['step']
    assert f"stopped at step {step}; run the same command to resume" in text
    assert 'Traceback' not in text and 'killed by signal' not in text


# Keeps the TrainingStopped (and through its traceback the loop's frame, its loader and live workers) to
# the end, as a test framework keeps an expected exception: multiprocessing's exit handler then stops the
# leftover workers with SIGTERM and waits for them, which must still kill them.
KEEPS_THE_STOPPED_LOOP = RUNNER.replace('sys.exit(train.main(sys.argv[1:]))', '''
import os, signal, threading, time
from training.control import TrainingStopped
from training.launch import launch
args = train.build_parser().parse_args(sys.argv[1:])
def stop_after_two_steps():
    path = os.path.join(args.output_dir, 'scalars.jsonl')
    while not (os.path.isfile(path) and open(path).read().count('"d_loss"') >= 2):
        time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=stop_after_two_steps, daemon=True).start()
try:
    launch(configs.get_config(args.config), vars(args), config_name=args.config)
except TrainingStopped as stopped:
    kept = stopped
print('leaving with the loop kept', flush=True)
''')


def test_a_process_that_keeps_the_stopped_loop_still_exits(tmp_path):
    out = tmp_path / 'run'
    process, log = start(tmp_path, out, '--num_workers', '2', runner=KEEPS_THE_STOPPED_LOOP)
    try:
        assert process.wait(timeout=120) == 0, output(log)
    finally:
        if process.poll() is None:  # hung: its workers exit by themselves once it is gone
            process.kill()
    assert 'leaving with the loop kept' in output(log)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_workers_die_with_a_killed_launcher(tmp_path):
    out = tmp_path / 'run'
    process, log = start(tmp_path, out, '--cpu_processes', '2')
    # rank 0 holds the lock (the launcher's own check leaves an empty file) and both ranks are up
    wait_for(lambda: lock_holder(out) and len(training_processes(process.pid)) == 2, process, log)
    workers = training_processes(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.time() + 20
    while any(alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), 'orphaned training processes'


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc')
def test_sigterm_to_the_launcher_stops_the_workers_with_a_checkpoint(tmp_path):
    out = tmp_path / 'run'
    process, log = start(tmp_path, out, '--cpu_processes', '2')
    wait_for(lambda: steps_done(out) >= 1, process, log)
    workers = training_processes(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143, output(log)
    assert not any(alive(pid) for pid in workers)
    step = load_file(latest_paths(out)['generator'])['step']
    assert step >= 1 and f'stopped at step {step}; run the same command to resume' in output(log)
    assert 'Traceback' not in output(log)


def test_a_second_run_into_the_same_folder_is_refused_with_the_holder(tmp_path):
    out = tmp_path / 'run'
    lock = OutputDirLock(out).acquire()
    try:
        with pytest.raises(SystemExit) as error:
            train_script.main(['--config', 'TINY_GRAM', '--data_dir', data_folder(tmp_path / 'data'),
                               '--output_dir', str(out), '--num_workers', '0'])
        message = str(error.value.code)
        assert message.startswith(f'error: --output_dir {out} is in use by another training run (PID {os.getpid()}')
        assert '\n' not in message
        with pytest.raises(OutputDirBusy):  # the launcher asks before starting any worker
            check_output_dir_free(out)
    finally:
        lock.release()
    check_output_dir_free(out)  # released: free again
    assert not out.exists()  # nothing was written: the folder the lock made (and its lock file) are gone


def test_a_taken_port_is_a_clear_error_and_no_port_means_a_free_one():
    with socket.socket() as server:
        server.bind(('', 0))
        server.listen()
        taken = server.getsockname()[1]
        with pytest.raises(ValueError, match=f'--port {taken} is already in use .*leave --port out'):
            resolve_port(taken)
    assert 1024 <= resolve_port(None) <= 65535


def test_the_lock_leaves_a_users_folder_and_files_alone(tmp_path):
    """Only what the lock itself created goes: a folder that existed stays, and so does anything in it."""
    existing = tmp_path / 'mine'
    existing.mkdir()
    OutputDirLock(existing).acquire().release()
    assert existing.is_dir() and os.listdir(existing) == []
    (existing / 'notes.txt').write_text('keep')
    OutputDirLock(existing).acquire().release()
    assert sorted(os.listdir(existing)) == ['.train.lock', 'notes.txt']
