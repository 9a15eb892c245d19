"""A fake vLLM OpenAI-compatible server for tests: `http.server` on 127.0.0.1 in a thread,
answering GET /v1/models and POST /v1/completions in vLLM's response format (logprobs with
`token_id:<id>` tokens, `prompt_token_ids` and `token_ids` per choice), with completions
sampled by a real model through TransformersEngine; every request body is recorded."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any

from astor_core.policy.rollout import RolloutConfig, SamplingParams, TransformersEngine


class FakeVLLMServer:
    """Context manager: `url` while running, `requests` the decoded POST bodies."""

    def __init__(self, model: Any, tokenizer: Any, model_name: str = "models/policy") -> None:
        self.engine = TransformersEngine(model, tokenizer, RolloutConfig())
        self.model_name = model_name
        self.requests: list[dict[str, Any]] = []
        self.fail_next: int | None = None
        """HTTP status the next /v1/completions answers with instead of completions."""
        self.drop_choices = 0
        """Choices left out of each answer (to test the count check)."""

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """The vLLM response to one /v1/completions body."""
        params = SamplingParams(
            max_new_tokens=body["max_tokens"],
            temperature=body["temperature"],
            top_p=body["top_p"],
            top_k=max(body["top_k"], 0),
            stop=tuple(body.get("stop", ())),
            seed=body.get("seed"),
        )
        rollouts = self.engine.generate(list(body["prompt"]), body["n"], params)
        choices = []
        for k, r in enumerate(rollouts):
            tokens = [f"token_id:{t}" for t in r.completion_ids]
            choices.append(
                {
                    "index": k,
                    "text": r.completion,
                    "logprobs": {
                        "text_offset": list(range(len(tokens))),
                        "token_logprobs": r.logprobs,
                        "tokens": tokens,
                        "top_logprobs": [{t: lp} for t, lp in zip(tokens, r.logprobs, strict=True)],
                    },
                    "finish_reason": r.finish_reason,
                    "stop_reason": None,
                    "prompt_logprobs": None,
                    "prompt_token_ids": r.prompt_ids,
                    "token_ids": r.completion_ids,
                }
            )
        choices = choices[: len(choices) - self.drop_choices]
        choices.reverse()  # vLLM streams choices as they finish; clients sort by index
        n_prompt = sum(len(r.prompt_ids) for r in rollouts[:: body["n"]])
        n_out = sum(len(r.completion_ids) for r in rollouts)
        return {
            "id": f"cmpl-{len(self.requests)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": n_prompt,
                "completion_tokens": n_out,
                "total_tokens": n_prompt + n_out,
            },
        }

    def __enter__(self) -> FakeVLLMServer:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": fake.model_name}]})
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                if self.path != "/v1/completions":
                    self._send(404, {"detail": "Not Found"})
                elif fake.fail_next is not None:
                    status, fake.fail_next = fake.fail_next, None
                    self._send(status, {"error": {"message": "engine dead", "code": status}})
                else:
                    self._send(200, fake.completions(body))

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
