"""A loopback OpenAI-compatible generator for replay tests (a real HTTP server on 127.0.0.1).

It answers a prompt made from a template: "Be creative..." prompts invent a monthly price
and a free laptop; any other prompt quotes the documents back.
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

from tests.conftest import chat_completion


class Generator(BaseHTTPRequestHandler):
    calls = 0
    max_tokens: ClassVar[list[object]] = []  # each request's max_tokens (None: not sent)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        document = prompt.split("Documents:\n", 1)[1].split("\n\nQuestion:", 1)[0]
        if prompt.startswith("Be creative"):
            price = int(re.sub(r"\D", "", document.split("$", 1)[1].split(" ", 1)[0]))
            answer = f"It is only ${price // 7:,} per month, and it comes with a free laptop."
        else:
            answer = document
        type(self).calls += 1
        type(self).max_tokens.append(body.get("max_tokens"))
        reply = json.dumps(chat_completion(answer)).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass
