"""The Files API: uploads streamed to disk, listed, downloaded and deleted."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from service.simulator.config import SimulatorConfig
from tests.service.simulator.reference import TEST_KEY


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim-files")


@pytest.fixture(scope="module")
def sim_config(data_dir: Path) -> SimulatorConfig:
    return SimulatorConfig(data_dir=data_dir)


def _stored(data_dir: Path) -> set[str]:
    return {p.name for p in data_dir.iterdir()}


def test_upload_retrieve_list_content_delete(client: openai.OpenAI, data_dir: Path) -> None:
    content = b'{"messages": [{"role": "user", "content": "hi"}]}\n'
    uploaded = client.files.create(file=("train.jsonl", content), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (
        len(content),
        "train.jsonl",
        "fine-tune",
    )
    assert uploaded.status == "processed" and uploaded.expires_at is None
    assert uploaded.id in _stored(data_dir)

    assert client.files.retrieve(uploaded.id) == uploaded
    assert uploaded.id in {f.id for f in client.files.list(purpose="fine-tune")}
    assert uploaded.id not in {f.id for f in client.files.list(purpose="batch")}
    assert client.files.content(uploaded.id).content == content

    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id
    assert uploaded.id not in _stored(data_dir)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    assert uploaded.id not in {f.id for f in client.files.list()}


def test_large_upload_is_streamed_intact(
    sim_url: str, client: openai.OpenAI, data_dir: Path
) -> None:
    block = os.urandom(1 << 16)
    chunks = 48  # 3 MiB, sent as a generator so the client never holds it whole either

    def body() -> Iterator[bytes]:
        for _ in range(chunks):
            yield block

    digest = hashlib.sha256(block * chunks).hexdigest()
    boundary = "simboundary7e3f"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def multipart() -> Iterator[bytes]:
        yield head
        yield from body()
        yield tail

    response = httpx.post(
        f"{sim_url}/files",
        content=multipart(),
        headers={
            "authorization": f"Bearer {TEST_KEY}",
            "content-type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["bytes"] == len(block) * chunks and record["filename"] == "big.bin"
    assert hashlib.sha256((data_dir / record["id"]).read_bytes()).hexdigest() == digest
    assert hashlib.sha256(client.files.content(record["id"]).content).hexdigest() == digest
    assert not [p for p in data_dir.iterdir() if p.suffix == ".part"]  # no staging leftovers


def test_upload_validation(sim_url: str, client: openai.OpenAI, data_dir: Path) -> None:
    before = _stored(data_dir)
    with pytest.raises(openai.BadRequestError) as wrong_format:
        client.files.create(file=("notes.txt", b"x"), purpose="fine-tune")
    assert "jsonl" in wrong_format.value.message
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("a.jsonl", b"x"), purpose="no-such-purpose")  # type: ignore[arg-type]
    no_purpose = httpx.post(
        f"{sim_url}/files",
        headers={"authorization": f"Bearer {TEST_KEY}"},
        files={"file": ("a.jsonl", b"{}")},
    )
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    assert _stored(data_dir) == before  # refused uploads leave nothing behind


def test_list_pagination_newest_first(client: openai.OpenAI) -> None:
    ids = [client.files.create(file=(f"p{i}.txt", b"x"), purpose="assistants").id for i in range(3)]
    page = client.files.list(purpose="assistants", limit=2)
    assert [f.id for f in page.data] == ids[::-1][:2] and page.has_more
    walked = [
        f.id for f in client.files.list(purpose="assistants", limit=2)
    ]  # the SDK follows `after`
    assert walked[:3] == ids[::-1]
