"""The benchmark keeps working (tiny mode); it asserts no timings, only that figures are produced."""
import json

import bench


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
    bench_suite.main(['--quick', '--budget_s', '1e9', '--json', str(tmp_path / 'suite.json')])
    report = json.loads((tmp_path / 'suite.json').read_text())
    assert report['environment']['weights'].startswith('random')
    render = [r for r in report['rows'] if r['table'] == 'render']
    training = [r for r in report['rows'] if r['table'] == 'training']
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


def test_gpu_suite_skips_rows_past_its_time_budget(one_thread, tmp_path):
    import bench_suite

    rows = bench_suite.main(['--quick', '--budget_s', '0'])
    assert rows and all(row['skipped'] == 'time budget spent' for row in rows)
