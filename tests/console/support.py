"""What the console tests share: a small valid training file, SDK clients, and waiting for a job's charge."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai

from tests.conftest import Stack
from tests.harness import wait_until

BASE_MODEL = "gpt-4o-mini-2024-07-18"


def training_jsonl(examples: int = 12) -> bytes:
    """Chat examples the simulator and Farebox both accept (the simulator wants at least 10)."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You answer questions about fares."},
                    {"role": "user", "content": f"What is fare number {i}?"},
                    {"role": "assistant", "content": f"Fare number {i} costs {i + 2} dollars."},
                ]
            }
        )
        for i in range(examples)
    ]
    return ("\n".join(lines) + "\n").encode()


def sdk(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.v1, api_key=key, max_retries=0)


def console(stack: Stack, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.farebox.base_url}/console",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


def upload(client: openai.OpenAI, name: str = "fares.jsonl") -> str:
    return client.files.create(file=(name, training_jsonl()), purpose="fine-tune").id


def chat(
    client: openai.OpenAI, model: str = "gpt-4o-mini", text: str = "How much is a ticket?"
) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=12
    )


def settled_job(stack: Stack, key: str, job_id: str, timeout_s: float = 40.0) -> dict[str, Any]:
    """Poll as a client would (retrieving the job) until Farebox has charged it; its console record."""
    client, api = sdk(stack, key), console(stack, key)

    def charged() -> dict[str, Any] | None:
        client.fine_tuning.jobs.retrieve(job_id)
        rows = {j["id"]: j for j in api.get("/api/jobs").raise_for_status().json()["data"]}
        row = rows.get(job_id)
        return row if row and row["settled_at"] else None

    return wait_until(charged, timeout_s, interval_s=0.25, what=f"job {job_id} settled")
