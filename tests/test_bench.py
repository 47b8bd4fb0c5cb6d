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
