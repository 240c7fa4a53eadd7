"""How one simulated OpenAI upstream behaves: auth, latency, faults, answer sizes, job timing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SimulatorConfig:
    """Every knob of the simulator; the defaults answer fast and never fail on their own."""

    # Auth: any "Bearer sk-..." key when api_key is None, else exactly this key.
    api_key: str | None = None
    organization_id: str = "org-farebox-sim"
    organization_name: str = "farebox-sim"  # the org slug inside fine-tuned model names

    # Answers.
    completion_tokens: int = 16  # natural answer length when max_tokens does not cut it
    reasoning_tokens: int = 8  # hidden tokens o-series / gpt-5 models add to completion_tokens
    fast: bool = False  # benchmark mode: fixed usage, no tokenizer on the request path
    fast_prompt_tokens: int = 12

    # Faults applied to every request.
    latency_ms: float = 0.0
    stream_chunk_delay_ms: float = 0.0
    error_rate: float = 0.0
    error_kinds: tuple[str, ...] = (
        "500",
    )  # what error_rate injects: a status, "garbage", "timeout"
    seed: int = 0
    hang_s: float = 30.0  # how long an injected "timeout" keeps the client waiting
    retry_after_s: int = 1

    # Files and fine-tuning.
    data_dir: Path | None = None  # uploads live here; a fresh temp dir when None
    job_phase_s: float = 1.0  # duration of validating_files, queued and running each
    min_training_examples: int = 10
    partial_trained_tokens: bool = True  # failed/cancelled jobs report what was trained; else null
    strict_fine_tuned_models: bool = False  # serve only ft: models that a job here created

    # Webhooks (standard-webhooks signed when a whsec_ secret is given).
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_retries: int = 3

    # Introspection for tests.
    recent_requests: int = 100
