"""python -m ccexp.bench end to end on the tiny model: every ratio is measured and written
(no timing is asserted: speed targets live in the benchmark's output, not in tests)."""

from __future__ import annotations

import json
import math

from ccexp.bench.__main__ import main


def test_bench_measures_every_ratio_on_tiny(tmp_path, tiny_dir):
    out = tmp_path / "bench.json"
    main(["--model", "tiny", "--steps", "2", "--warmup", "1", "--prompts", "2", "--new-tokens", "4", "--json", str(out)])
    results = json.loads(out.read_text())
    assert len(results["ratios"]) == 8
    for name, ratio in results["ratios"].items():
        assert math.isfinite(ratio["value"]) and ratio["value"] > 0, name
    training = results["training"]
    # The three sides did the same number of optimizer steps on the same examples.
    assert training["ccexp"]["steps"] == training["bare_loop"]["steps"] == training["hf_trainer"]["steps"] == 3
    assert results["memory"]["qlora"]["peak_rss_mb"] > results["memory"]["qlora"]["before_model_mb"]


def test_bench_unknown_model_is_one_line(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "nosuch"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "ccexp.bench: error: In 'config': Could not find 'model/nosuch'"
