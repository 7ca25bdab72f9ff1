"""A label-aware judge whose agreement with human labels is chosen, and can drift.

It knows the RAGTruth QA labels (an answer is hallucinated iff its `labels` are non-empty)
and answers an llm_rubric request ({"reasoning", "score"} on the rubric's scale) right with
a chosen per-class accuracy, so its balanced accuracy is that number:

- each answer has a latent difficulty u in [0, 1) (a hash of seed and answer): the judge is
  right on it iff u < p, so it repeats its verdicts like a judge at temperature 0, and a
  drift to a lower accuracy turns the hardest items it used to get right wrong;
- with probability `noise` per call the verdict is a coin flip instead (real judges are not
  perfectly repeatable); p is set so that p(1 - noise) + noise / 2 = the chosen accuracy.

`set_accuracy(x)` switches at a moment of the caller's choosing; `switch_after` switches
after that many calls. `DriftingJudgeServer` serves it on loopback (bench.judge_server);
`policy.completion(request)` is the same reply for respx in tests.

    python -m bench.drifting_judge --accuracy 0.85 --after 0.70 --switch-after 200
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

from .judge_server import JudgeServer, ServerConfig, estimate_tokens, message_text

DATA = Path(__file__).resolve().parents[2] / "shared/data/ragtruth_qa/ragtruth_qa.jsonl"
_ANSWER = re.compile(r'<data kind="answer" nonce="([^"]+)">\n(.*?)\n</data nonce="\1">', re.S)


def labels_from_ragtruth(path: Path) -> dict[str, bool]:
    """answer text -> hallucinated, from RAGTruth QA records."""
    out: dict[str, bool] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                for response in json.loads(line)["responses"]:
                    out[response["response"].strip()] = bool(response["labels"])
    return out


class DriftPolicy:
    def __init__(
        self,
        labels: dict[str, bool],
        accuracy: float = 0.85,
        *,
        noise: float = 0.05,
        seed: int = 0,
        after: float | None = None,
        switch_after: int | None = None,
    ) -> None:
        self.labels, self.noise, self.seed = labels, noise, seed
        self.after, self.switch_after = after, switch_after
        self._rng = random.Random(seed)
        self.calls = self.unknown = 0
        self.set_accuracy(accuracy)

    def set_accuracy(self, accuracy: float) -> None:
        if not 0.5 <= accuracy <= 1.0:
            raise ValueError("accuracy must lie in [0.5, 1]")
        self.accuracy = accuracy
        # Right on items with u < p; a coin on `noise` of calls: p(1-q) + q/2 = accuracy.
        self._p = min(1.0, (accuracy - self.noise / 2) / (1 - self.noise))

    def _u(self, answer: str) -> float:
        digest = hashlib.sha256(f"{self.seed}\x00{answer}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def verdict_passes(self, answer: str) -> bool:
        self.calls += 1
        if self.after is not None and self.calls == (self.switch_after or 0) + 1:
            self.set_accuracy(self.after)
        hallucinated = self.labels.get(answer.strip())
        if hallucinated is None:
            self.unknown += 1
            return True
        if self._rng.random() < self.noise:
            return self._rng.random() < 0.5
        right = self._u(answer.strip()) < self._p
        return (not hallucinated) if right else hallucinated

    def completion(self, request: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI chat completion answering an llm_rubric request."""
        prompt = message_text(request.get("messages") or [])
        match = _ANSWER.search(prompt)
        passes = self.verdict_passes(match.group(2) if match else "")
        schema = ((request.get("response_format") or {}).get("json_schema") or {}).get("schema")
        score = (schema or {}).get("properties", {}).get("score", {})
        low, high = score.get("minimum", 1), score.get("maximum", 5)
        reasoning = "supported" if passes else "unsupported"
        content = json.dumps({"reasoning": reasoning, "score": high if passes else low})
        return {
            "id": f"drift-{self.calls}",
            "object": "chat.completion",
            "model": request.get("model", "drifting-judge"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": estimate_tokens(prompt),
                "completion_tokens": estimate_tokens(content),
                "total_tokens": estimate_tokens(prompt) + estimate_tokens(content),
            },
        }


class DriftingJudgeServer(JudgeServer):
    """bench.judge_server's HTTP loop with the drifting policy answering chat calls."""

    def __init__(self, policy: DriftPolicy, config: ServerConfig | None = None) -> None:
        super().__init__(config or ServerConfig())
        self.policy = policy

    async def _chat(
        self, request: dict[str, Any], reader: asyncio.StreamReader
    ) -> tuple[int, dict[str, str], bytes] | None:
        self.stats.chat_calls += 1
        reply = self.policy.completion(request)
        self.stats.prompt_tokens += reply["usage"]["prompt_tokens"]
        self.stats.completion_tokens += reply["usage"]["completion_tokens"]
        return 200, {}, json.dumps(reply).encode()


async def _serve(args: argparse.Namespace) -> None:
    policy = DriftPolicy(
        labels_from_ragtruth(args.data),
        args.accuracy,
        noise=args.noise,
        seed=args.seed,
        after=args.after,
        switch_after=args.switch_after,
    )
    server = DriftingJudgeServer(policy, ServerConfig(port=args.port))
    print(f"drifting judge on {await server.start()}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument("--accuracy", type=float, default=0.85)
    parser.add_argument("--after", type=float)
    parser.add_argument("--switch-after", type=int, help="calls before switching to --after")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
