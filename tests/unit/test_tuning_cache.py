"""The tuning cache never fails a start: a torn or foreign file is ignored, an unwritable folder logged."""

from __future__ import annotations

from predictor.encoder import autotune, tuning_cache


def test_a_stored_table_is_read_back(tmp_path):
    cache = tuning_cache.TuningCache(str(tmp_path), "k")
    cache.put("batch_table", {"budget_ms": 50.0, "points": [[1, 16, 0.01], [8, 16, 0.04]]})
    again = tuning_cache.TuningCache(str(tmp_path), "k")
    assert autotune.cached_table(again, 50.0) == [autotune.Point(1, 16, 0.01), autotune.Point(8, 16, 0.04)]
    assert autotune.cached_table(again, 20.0) is None  # another budget: measure again
    assert not list(tmp_path.glob("*.tmp"))


def test_a_torn_or_foreign_file_is_measured_around(tmp_path, caplog):
    (tmp_path / "k.json").write_text('{"batch_table": {"budget_ms": 50')
    assert tuning_cache.TuningCache(str(tmp_path), "k").get("engine") is None
    assert "unreadable" in caplog.text
    (tmp_path / "k.json").write_text('{"batch_table": {"budget_ms": 50, "points": [["x"]]}, "engine": 3}')
    assert autotune.cached_table(tuning_cache.TuningCache(str(tmp_path), "k"), 50) is None


def test_an_unwritable_folder_is_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = tuning_cache.TuningCache(str(blocker / "sub"), "k")
    cache.put("engine", "torch")
    assert "not written" in caplog.text


def test_off_is_no_cache():
    cache = tuning_cache.TuningCache("", "")
    cache.put("engine", "onnx")
    assert cache.path is None and cache.get("engine") is None  # nothing kept, nothing reused
