"""The benchmark keeps working (tiny mode); it asserts no timings, only that figures are produced."""
import json
import subprocess
import sys

import pytest
import torch

import bench
from conftest import REPO_ROOT, official_fixture


def test_bench_tiny_mode_writes_figures(one_thread, tmp_path):
    bench.main(['--tiny', '--peak_gflops', '80', '--json', str(tmp_path / 'bench.json')])
    report = json.loads((tmp_path / 'bench.json').read_text())
    rows = report['results']
    assert {(r['case'], r['path']) for r in rows} == {('batch_one_camera', 'fast'), ('orbit', 'fast'),
                                                       ('batch_one_camera', 'plain'), ('orbit', 'plain')}
    for row in rows:
        assert row['ms_per_image'] > 0 and row['gflop_per_s'] > 0 and row['peak_memory_mb'] > 0
        assert row['fraction_of_peak'] == row['gflop_per_s'] / 80


def test_bench_inexact_path_reports_options_and_difference(one_thread, tmp_path):
    bench.main(['--tiny', '--precision', 'bf16', '--early_termination', '0.01', '--paths', 'fast,inexact',
                '--json', str(tmp_path / 'bench.json')])
    report = json.loads((tmp_path / 'bench.json').read_text())
    options = {'precision': 'bf16', 'early_termination': 0.01, 'tf32': False, 'compile': False}
    assert report['environment']['options'] == options
    rows = {(r['case'], r['path']): r for r in report['results']}
    assert set(rows) == {(case, path) for case in ('batch_one_camera', 'orbit') for path in ('fast', 'inexact')}
    for case in ('batch_one_camera', 'orbit'):
        inexact = rows[case, 'inexact']
        assert inexact['options'] == options
        # bf16 changes the pixels, a little (this untrained model: about 0.02)
        assert 0 < inexact['max_abs_diff_vs_exact'] < 0.1
        assert 0 < inexact['radiance_points'] <= rows[case, 'fast']['radiance_points']


def test_gpu_suite_runs_end_to_end_in_quick_mode(one_thread, tmp_path):
    """bench_suite.py is meant for a GPU it has not seen: its quick mode runs every row on the CPU."""
    import bench_suite

    # no time budget: on a loaded machine the default one could skip rows (what it skips is tested below)
    bench_suite.main(['--quick', '--budget_s', '1e9', '--profile', '--json', str(tmp_path / 'suite.json')])
    report = json.loads((tmp_path / 'suite.json').read_text())
    assert report['environment']['weights'].startswith('random')
    render = [r for r in report['rows'] if r['table'] == 'render']
    training = [r for r in report['rows'] if r['table'] == 'training']
    profiles = [r for r in report['rows'] if r['table'] == 'profile']
    assert [r['case'].split(',')[0] for r in profiles] == ['render', 'training step']
    for row in profiles:
        assert 'skipped' not in row, row
        assert len(row['operations']) == bench_suite.PROFILE_TOP and row['ops_dispatched'] > 100
        assert all(op['calls'] > 0 and op['self_ms'] >= 0 for op in row['operations'])
        assert row['scalar_reads'] >= 1  # the batched compaction reads its size once per call
    assert {r['path'] for r in render} == {'batched', 'per_latent', 'plain', 'fp16'}
    assert len(render) == 4 * 3 and len(training) == 4 * 2  # 2 batches + orbit; 2 training settings
    for row in render + training:
        assert 'skipped' not in row, row
    for row in render:
        assert row['ms_per_image'] > 0 and row['peak_memory_mb'] > 0
        if row['path'] == 'fp16':  # half precision changes the pixels, a little
            assert 0 < row['max_abs_diff_vs_exact'] < 0.05
    for row in training:
        assert row['seconds_per_iteration'] > 0 and row['peak_memory_mb'] > 0


def test_gpu_suite_checks_the_official_fixture_on_its_device():
    """--fixture: the batched path (the CUDA default) renders the official checkpoint within the fixture
    tolerance; fp16 does not reach the exact pixels, so the check tells them apart. (The per-latent and
    plain paths' fixture renders are tests/test_gram_fixture.py's.)"""
    import bench_suite

    folder = official_fixture('gram_ffhq')
    rows = bench_suite.fixture_rows(folder, bench_suite.SETTINGS['quick'], 'cpu', deadline=float('inf'),
                                    paths=('batched', 'fp16'))
    batched, fp16 = rows
    for row in rows:
        assert 'skipped' not in row and row['finite'] and row['views'] == 1 and row['seeds'] == 2
    assert batched['path'] == 'batched' and batched['exact'] and batched['within_tolerance'], batched
    assert batched['max_abs_diff'] < 1e-5
    assert fp16['path'] == 'fp16' and not fp16['exact']
    assert 1e-4 < fp16['max_abs_diff'] < 0.01 and fp16['share_within_abs_tol'] < 0.999


def test_official_tolerance_fails_on_a_few_far_values_or_many_near_ones():
    from utils.official_tolerance import official_image_error

    reference = torch.zeros(2, 3, 32, 32)
    assert official_image_error(reference + 5e-5, reference)['within_tolerance']
    one_far = reference.clone()
    one_far[0, 0, 0, 0] = 0.03  # one value beyond OFFICIAL_MAX_TOL
    assert not official_image_error(one_far, reference)['within_tolerance']
    many_near = reference.clone()
    many_near.view(-1)[:20] = 5e-3  # 0.3% of the values beyond OFFICIAL_ABS_TOL, none beyond the max
    error = official_image_error(many_near, reference)
    assert not error['within_tolerance'] and error['max_abs_diff'] == pytest.approx(5e-3)
    with_nan = reference.clone()
    with_nan[1, 2, 3, 4] = float('nan')
    assert not official_image_error(with_nan, reference)['within_tolerance']


def test_gpu_suite_refuses_an_incomplete_fixture_folder(tmp_path, capsys):
    import bench_suite

    (tmp_path / 'generator.pth').write_bytes(b'')
    with pytest.raises(SystemExit):
        bench_suite.main(['--quick', '--fixture', str(tmp_path)])
    assert f"--fixture {tmp_path}: missing ema.pth, expected.pt" in capsys.readouterr().err


def test_gpu_suite_skips_rows_past_its_time_budget(one_thread, tmp_path):
    import bench_suite

    rows = bench_suite.main(['--quick', '--budget_s', '0'])
    assert rows and all(row['skipped'] == 'time budget spent' for row in rows)


def test_gpu_suite_records_a_failing_row_and_goes_on(tmp_path, monkeypatch, capsys):
    """A run on a GPU lent for minutes must not lose its other rows to one failure: the failing row carries
    its error, the others are measured, and the script's exit status says a row failed."""
    import bench_suite

    def broken(*args, **kwargs):
        raise ValueError('broken training row')
    monkeypatch.setattr(bench_suite, 'benchmark', broken)
    rows = bench_suite.main(['--quick', '--budget_s', '1e9'])
    training = [row for row in rows if row['table'] == 'training']
    assert training and all(row['error'] == 'ValueError: broken training row' for row in training)
    assert all('ms_per_image' in row for row in rows if row['table'] == 'render')
    output = capsys.readouterr()
    assert 'ERROR ValueError: broken training row' in output.out and 'Traceback' in output.err
    script = subprocess.run([sys.executable, 'bench_suite.py', '--quick', '--budget_s', '0'], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert script.returncode == 0, script.stderr  # skipped rows are not failures


def test_gpu_suite_late_pass_compares_with_an_exact_path_timed_earlier(one_thread):
    """The full run times fp16_compile after the training table; its exact reference is rendered then."""
    import bench_suite

    settings = dict(bench_suite.SETTINGS['quick'], batches=(2,))
    together = bench_suite.render_rows(settings, 'cpu', float('inf'), ('batched', 'fp16'))
    alone = bench_suite.render_rows(settings, 'cpu', float('inf'), ('fp16',))
    assert [row['path'] for row in alone] == ['fp16', 'fp16']  # 2 seeds at one camera, orbit
    for late, joint in zip(alone, (row for row in together if row['path'] == 'fp16')):
        assert late['case'] == joint['case']
        assert late['max_abs_diff_vs_exact'] == joint['max_abs_diff_vs_exact'] > 0
