"""The benchmark keeps working (tiny mode); it asserts no timings, only that figures are produced."""
import json

import bench


def test_bench_tiny_mode_writes_figures(tmp_path):
    bench.main(['--tiny', '--json', str(tmp_path / 'bench.json')])
    report = json.loads((tmp_path / 'bench.json').read_text())
    rows = report['results']
    assert {(r['case'], r['path']) for r in rows} == {('batch_one_camera', 'fast'), ('orbit', 'fast'),
                                                       ('batch_one_camera', 'plain'), ('orbit', 'plain')}
    for row in rows:
        assert row['ms_per_image'] > 0 and row['gflop_per_s'] > 0 and row['peak_memory_mb'] > 0
