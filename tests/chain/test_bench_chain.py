import json

from scripts.bench_chain import main


def test_bench_prints_one_json_line_with_the_rates(capsys):
    assert (
        main(["--transfers", "300", "--addresses", "20", "--per-tx", "100", "--gap-blocks", "1", "--repeats", "1"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["logs"] == 300
    assert result["addresses"] == 20
    for key in ("raw_fetch_logs_per_s", "scanner_logs_per_s", "scanner_to_raw_ratio", "decode_us_per_log"):
        assert result[key] > 0
