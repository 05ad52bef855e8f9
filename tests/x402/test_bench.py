import json

from scripts.bench_x402 import main


def test_bench_prints_one_json_line_with_the_rates_and_latencies(capsys):
    assert main(["--purchases", "4", "--concurrency", "2", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["purchases"] == 4
    for key in ("raw_tx_per_s", "x402_purchases_per_s", "x402_to_raw_ratio", "latency_ms_p50", "latency_ms_p99"):
        assert result[key] > 0
    assert result["latency_ms_p99"] >= result["latency_ms_p50"]
