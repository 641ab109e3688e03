"""The ``huggingface`` format: tiny transformers models built here (a BERT text classifier and
a GPT-2 generator with a few KB of random weights, tokenizers made from a small vocabulary;
nothing comes from a hub), served

- directly, by the model server's app in this process (V1, V2, the OpenAI-compatible routes
  and their bounds), and as a process whose transformers cannot be imported;
- by InferenceServices whose models are in the platform's S3 bucket, through the gateway:
  V1, V2 with tritonclient (BYTES), and the OpenAI client's completions, chat completions and
  streams; each answer is checked against the model's own predictions (transformers'
  pipeline, ``generate``) run here.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.common.objectstore import ObjectStore
from services.common.settings import SINGLE_USER_NAMESPACE as NS

from .conftest import ISVC_PATH, isvc, predict, ready, wait_isvc

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["the movie was great", "bad plot and awful actor", "i liked it"]
WORDS = "the a movie was is great good bad awful plot actor story i liked hated it and not"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)
#: A stand-in for transformers that cannot be imported, first on the server's PYTHONPATH.
BROKEN_TRANSFORMERS = 'raise ImportError("transformers is broken on purpose (test_huggingface)")\n'


def build_classifier(directory: Path) -> None:
    """A one-layer BERT sequence classifier (2 labels) and a WordPiece tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS.split()]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    specials = {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", mask_token="[MASK]", **specials
    )
    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        initializer_range=0.5,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    model = BertForSequenceClassification(config).eval()
    # Random weights, the bias moved so that TEXTS are not all one class: the text the
    # model leans most POSITIVE on is, the others are not.
    with torch.inference_mode():
        logits = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
        lean = sorted((logits[:, 1] - logits[:, 0]).tolist())
        model.classifier.bias[1] -= (lean[-1] + lean[-2]) / 2
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def build_generator(directory: Path) -> None:
    """A one-layer GPT-2 over a word-level vocabulary, with a chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for word in [*WORDS.split(), "user", "assistant", ":", "hello", "world"]:
        vocab["\u2581" + word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    end = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=end, eos_token=end, unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(5)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=48,
        n_embd=16,
        n_layer=1,
        n_head=2,
        initializer_range=0.8,
        bos_token_id=0,
        eos_token_id=0,
    )
    GPT2LMHeadModel(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    build_classifier(root / "cls")
    build_generator(root / "gen")
    # The same generator without its chat template: chat prompts are a plain join.
    shutil.copytree(root / "gen", root / "plain")
    (root / "plain" / "chat_template.jinja").unlink()
    (root / "broken" / "transformers").mkdir(parents=True)
    (root / "broken" / "transformers" / "__init__.py").write_text(BROKEN_TRANSFORMERS)
    return {name: root / name for name in ("cls", "gen", "plain", "broken")}


def expected_classes(directory: Path, texts: list[str]) -> list[list[float]]:
    """Each text's class probabilities by transformers' own text-classification pipeline."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(directory), top_k=None, device="cpu")
    rows: list[list[float]] = []
    answers: Any = classify(texts)
    for scores in answers:
        by_label = {s["label"]: s["score"] for s in scores}
        rows.append([by_label["NEGATIVE"], by_label["POSITIVE"]])
    return rows


def expected_text(directory: Path, prompt: str, new_tokens: int) -> tuple[str, int, int]:
    """Greedy ``generate`` of ``new_tokens`` after ``prompt``: the text, prompt and new
    token counts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
    new = out[0][ids.shape[1] :]
    text = str(tokenizer.decode(new, skip_special_tokens=True))
    return text, ids.shape[1], len(new)


# -- the model server's app, in this process ------------------------------------------------


def app_client(directory: Path, **env: str) -> httpx.AsyncClient:
    from services.serving.modelserver.app import create_model_app
    from services.serving.modelserver.loaders import load_model

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        model = load_model("m", "huggingface", directory)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    transport = httpx.ASGITransport(app=create_model_app(model, "v2"))
    return httpx.AsyncClient(transport=transport, base_url="http://model", timeout=60)


async def test_classifier_v1_v2_labels_and_probabilities(hf_models: dict[str, Path]) -> None:
    expected = expected_classes(hf_models["cls"], TEXTS)
    labels = [int(np.argmax(row)) for row in expected]
    assert len(set(labels)) == 2, expected  # the texts are not all one class
    async with app_client(hf_models["cls"]) as client:
        r = await client.post("/v1/models/m:predict", json={"instances": TEXTS})
        assert r.status_code == 200 and r.json() == {"predictions": labels}, r.text
        tensor = {"name": "text", "datatype": "BYTES", "shape": [3], "data": TEXTS}
        r = await client.post("/v2/models/m/infer", json={"inputs": [tensor]})
        out = r.json()["outputs"]
        assert out == [{"name": "output-0", "datatype": "INT64", "shape": [3], "data": labels}]
        meta = (await client.get("/v2/models/m")).json()
        assert meta["platform"] == "huggingface_shipyard"
        assert meta["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]
        r = await client.post("/v1/models/m:predict", json={"instances": [[1.0, 2.0]]})
        assert r.status_code == 400 and "the model takes texts" in r.json()["error"], r.text
        r = await client.post("/openai/v1/completions", json={"model": "m", "prompt": "hi"})
        assert r.status_code == 400, r.text
        assert "sequence_classification model; it does not generate" in r.json()["error"]["message"]
    # KServe's --return_probabilities: {index: probability to 4 places} per text.
    async with app_client(hf_models["cls"], SHIPYARD_HF_RETURN_PROBABILITIES="true") as client:
        r = await client.post("/v1/models/m:predict", json={"instances": TEXTS})
        answer = r.json()["predictions"]
        assert answer == [{"0": round(a, 4), "1": round(b, 4)} for a, b in expected], answer
        r = await client.post("/v2/models/m/infer", json={"inputs": [tensor]})
        outputs = {o["name"]: o for o in r.json()["outputs"]}
        assert outputs["probabilities"]["shape"] == [3, 2]
        np.testing.assert_allclose(outputs["probabilities"]["data"], np.ravel(expected), rtol=1e-5)


async def test_generator_v1_v2_and_completion_match_generate(hf_models: dict[str, Path]) -> None:
    text, prompt_tokens, new_tokens = expected_text(hf_models["gen"], "the movie was", 6)
    assert new_tokens == 6 and text.strip(), text
    async with app_client(hf_models["gen"]) as client:
        body = {"model": "m", "prompt": "the movie was", "max_tokens": 6}
        r = await client.post("/openai/v1/completions", json=body)
        doc = r.json()
        assert r.status_code == 200 and doc["object"] == "text_completion", r.text
        assert doc["choices"] == [
            {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        ]
        assert doc["usage"] == {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 6,
            "total_tokens": prompt_tokens + 6,
        }
        # V1 and V2 continue each text greedily up to the context's room (at most 64 tokens).
        room = 48 - prompt_tokens
        full, _, _ = expected_text(hf_models["gen"], "the movie was", room)
        r = await client.post("/v1/models/m:predict", json={"instances": ["the movie was"]})
        assert r.json() == {"predictions": [full]}, r.text
        tensor = {"name": "input-0", "datatype": "BYTES", "shape": [1], "data": ["the movie was"]}
        r = await client.post("/v2/models/m/infer", json={"inputs": [tensor]})
        assert r.json()["outputs"][0] == {
            "name": "output-0",
            "datatype": "BYTES",
            "shape": [1],
            "data": [full],
        }
        # A stop sequence ends the text before it.
        stop = text.split()[1]
        r = await client.post("/openai/v1/completions", json={**body, "stop": [stop]})
        choice = r.json()["choices"][0]
        assert choice["text"] == text[: text.find(stop)] and choice["finish_reason"] == "stop"


async def test_completion_prompts_as_lists_ids_and_echo(hf_models: dict[str, Path]) -> None:
    first, _, _ = expected_text(hf_models["gen"], "the movie was", 3)
    second, _, _ = expected_text(hf_models["gen"], "bad plot", 3)
    async with app_client(hf_models["gen"]) as client:
        body = {"model": "m", "prompt": ["the movie was", "bad plot"], "max_tokens": 3}
        doc = (await client.post("/openai/v1/completions", json=body)).json()
        assert [(c["index"], c["text"]) for c in doc["choices"]] == [(0, first), (1, second)]
        assert doc["usage"]["completion_tokens"] == 6
        # Token ids as the prompt, and echo: the prompt's text comes first.
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(hf_models["gen"])("the movie was")["input_ids"]
        body = {"model": "m", "prompt": ids, "max_tokens": 3, "echo": True}
        doc = (await client.post("/openai/v1/completions", json=body)).json()
        assert doc["choices"][0]["text"] == "the movie was" + first, doc
        card = (await client.get("/openai/v1/models/m")).json()
        assert card["id"] == "m" and card["object"] == "model"
        r = await client.get("/openai/v1/models/other")
        assert r.status_code == 404 and r.json()["error"]["type"] == "NotFoundError"


async def test_stream_closed_early_ends_the_generation(hf_models: dict[str, Path]) -> None:
    """A reader that goes away after the first piece: the generation stops within a few
    tokens of it instead of running to max_tokens (each token is slowed to 20 ms here)."""
    from services.serving.modelserver.huggingface import Generation, SamplingParams
    from services.serving.modelserver.loaders import load_model
    from services.serving.modelserver.openai_api import stream_text

    model: Any = load_model("m", "huggingface", hf_models["gen"])
    finished: list[Generation] = []

    def slow_generate(ids: list[int], params: SamplingParams, on_token: Any) -> Generation:
        def slowly(token: int) -> None:
            time.sleep(0.02)
            on_token(token)

        finished.append(type(model).generate(model, ids, params, slowly))
        return finished[-1]

    model.generate = slow_generate
    pieces = stream_text(model, model.encode("the movie was"), SamplingParams(40), print)
    assert await pieces.__anext__()
    await pieces.aclose()
    for _ in range(100):
        if finished:
            break
        await asyncio.sleep(0.05)
    assert finished and len(finished[0].token_ids) < 10, finished


async def test_chat_template_or_plain_join(hf_models: dict[str, Path]) -> None:
    messages = [{"role": "user", "content": "hello world"}]
    templated, _, _ = expected_text(hf_models["gen"], "user : hello world assistant :", 4)
    plain, _, _ = expected_text(hf_models["plain"], "user: hello world\nassistant:", 4)
    for name, want in (("gen", templated), ("plain", plain)):
        async with app_client(hf_models[name]) as client:
            body = {"model": "m", "messages": messages, "max_completion_tokens": 4}
            r = await client.post("/openai/v1/chat/completions", json=body)
            doc = r.json()
            assert doc["object"] == "chat.completion", r.text
            assert doc["choices"][0]["message"] == {"role": "assistant", "content": want}
            assert doc["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        ({"prompt": "the movie", "max_tokens": 5000}, 400, "max_tokens", "over this server's cap"),
        ({"prompt": "the movie", "max_tokens": 0}, 400, "max_tokens", "positive integer"),
        ({"prompt": "the " * 60, "max_tokens": 4}, 400, "prompt", "maximum context length is 48"),
        ({"prompt": "x" * 100_001}, 400, "prompt", "at most 100000"),
        ({"prompt": "the", "n": 2}, 400, "n", "'n' > 1 is not supported"),
        ({"prompt": "the", "temperature": 7}, 400, "temperature", "from 0 to 2"),
        ({"prompt": 5}, 400, "prompt", "prompt is required"),
        ({"prompt": ""}, 400, "prompt", "the prompt is empty"),
        ({"prompt": [3, 99999]}, 400, "prompt", "token ids run from 0 to"),
        ({"prompt": "the", "model": "other"}, 404, "model", "`other` does not exist"),
        ({"prompt": "the", "model": None}, 400, "model", "model is required"),
    ],
)
async def test_completion_bounds_are_openai_errors(
    hf_models: dict[str, Path], body: dict[str, Any], status: int, param: str, says: str
) -> None:
    async with app_client(hf_models["gen"]) as client:
        r = await client.post("/openai/v1/completions", json={"model": "m", **body})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and says in error["message"], error
    assert error["code"] == str(status) and error["type"].endswith("Error")


async def test_max_tokens_cap_setting(hf_models: dict[str, Path]) -> None:
    async with app_client(hf_models["gen"], SHIPYARD_HF_MAX_TOKENS="8") as client:
        body = {"model": "m", "prompt": "the movie was"}
        r = await client.post("/openai/v1/completions", json={**body, "max_tokens": 9})
        assert r.status_code == 400 and "cap of 8 tokens" in r.json()["error"]["message"]
        doc = (await client.post("/openai/v1/completions", json=body)).json()
        assert doc["usage"]["completion_tokens"] == 8, doc  # no max_tokens: up to the cap
    from services.serving.modelserver.loaders import ModelLoadError

    with pytest.raises(ModelLoadError, match="SHIPYARD_HF_MAX_TOKENS must be a positive"):
        app_client(hf_models["gen"], SHIPYARD_HF_MAX_TOKENS="lots")


def test_missing_transformers_exits_saying_what_to_install(hf_models: dict[str, Path]) -> None:
    """The model server as its own process, a transformers that fails to import first on its
    path: it exits 1 with what to install (the InferenceService's condition quotes it)."""
    argv = [sys.executable, "-m", "services.serving.modelserver", "--model-name", "m"]
    argv += ["--model-dir", str(hf_models["gen"]), "--model-format", "huggingface"]
    path = os.pathsep.join(filter(None, [str(hf_models["broken"]), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [*argv, "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert done.returncode == 1, done.stderr
    assert "needs the Python package 'transformers'" in done.stderr, done.stderr
    assert "broken on purpose" in done.stderr and "serving-formats" in done.stderr


def test_kserve_flags_on_the_model_server_process(hf_models: dict[str, Path]) -> None:
    """KServe huggingfaceserver's flags (a predictor's ``args``) on the server's command line:
    ``--return_probabilities``, ``--max_length``, and a ``--task`` it does not serve."""
    from tests.conftest import free_port

    argv = [sys.executable, "-m", "services.serving.modelserver", "--model-name", "m"]
    argv += ["--model-dir", str(hf_models["cls"]), "--model-format", "huggingface"]
    refused = subprocess.run(
        [*argv, "--port", "1", "--task", "fill_mask"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1, refused.stderr
    assert "task 'fill_mask' is not served" in refused.stderr, refused.stderr
    port = free_port()
    flags = ["--return_probabilities", "--max_length", "16", "--host", "127.0.0.1"]
    server = subprocess.Popen([*argv, "--port", str(port), *flags], stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/m"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(url).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert server.poll() is None, server.communicate()[1]
        r = httpx.post(f"{url}:predict", json={"instances": TEXTS})
        expected = expected_classes(hf_models["cls"], TEXTS)
        assert r.json() == {
            "predictions": [{"0": round(a, 4), "1": round(b, 4)} for a, b in expected]
        }, r.text
    finally:
        server.terminate()
        server.wait(timeout=10)


# -- InferenceServices from s3://, through the gateway -------------------------------------


@pytest.fixture(scope="module")
def served(api: httpx.Client, seaweedfs: Any, hf_models: dict[str, Path]) -> Any:
    """The classifier (KServe's legacy predictor.huggingface block, with probabilities) and
    the generator (modelFormat huggingface), each a directory under the platform's bucket."""
    base = f"models/{NS}/hf-{os.urandom(4).hex()}"

    async def upload() -> None:
        async with ObjectStore(seaweedfs.config) as store:
            for name in ("cls", "gen"):
                for path in hf_models[name].iterdir():
                    body = path.read_bytes()

                    async def chunks(body: bytes = body) -> Any:
                        yield body

                    await store.put_stream(f"{base}/{name}/{path.name}", chunks())

    asyncio.run(upload())
    bucket = seaweedfs.config.bucket
    probabilities = [{"name": "SHIPYARD_HF_RETURN_PROBABILITIES", "value": "true"}]
    services: dict[str, dict[str, Any]] = {
        "hf-cls": {
            "huggingface": {"storageUri": f"s3://{bucket}/{base}/cls", "env": probabilities}
        },
        "hf-gen": {
            "model": {
                "modelFormat": {"name": "huggingface"},
                "storageUri": f"s3://{bucket}/{base}/gen",
            }
        },
    }
    for name, predictor in services.items():
        r = api.post(ISVC_PATH, json=isvc(name, predictor))
        assert r.status_code == 201, r.text
    objects = {name: wait_isvc(api, name, ready, timeout=120) for name in services}
    yield objects
    for name in services:
        api.delete(f"{ISVC_PATH}/{name}")


def test_classifier_from_s3_v1_and_tritonclient_bytes(
    served: Any, api: httpx.Client, platform: Any, hf_models: dict[str, Path]
) -> None:
    import tritonclient.http as triton

    expected = expected_classes(hf_models["cls"], TEXTS)
    assert served["hf-cls"]["spec"]["predictor"]["huggingface"]["protocolVersion"] == "v2"
    answer = predict(api, f"/serving/{NS}/hf-cls/v1/models/hf-cls:predict", {"instances": TEXTS})
    assert answer["predictions"] == [{"0": round(a, 4), "1": round(b, 4)} for a, b in expected]
    host = platform.gateway_url.removeprefix("http://")
    client = triton.InferenceServerClient(url=f"{host}/serving/{NS}/hf-cls")
    try:
        tensor = triton.InferInput("input-0", [len(TEXTS)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
        result = client.infer("hf-cls", [tensor])  # binary tensor data both ways
        assert result.as_numpy("output-0").tolist() == [int(np.argmax(r)) for r in expected]
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5)
    finally:
        client.close()


def test_generator_from_s3_openai_client(
    served: Any, platform: Any, hf_models: dict[str, Path]
) -> None:
    import openai

    text, prompt_tokens, _ = expected_text(hf_models["gen"], "the movie was", 5)
    chat_text, _, _ = expected_text(hf_models["gen"], "user : hello world assistant :", 5)
    base_url = f"{platform.gateway_url}/serving/{NS}/hf-gen/openai/v1"
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=5)
    try:
        assert [m.id for m in client.models.list().data] == ["hf-gen"]
        done = client.completions.create(model="hf-gen", prompt="the movie was", max_tokens=5)
        assert done.choices[0].text == text and done.choices[0].finish_reason == "length"
        assert done.usage is not None and done.usage.prompt_tokens == prompt_tokens
        assert done.usage.completion_tokens == 5
        pieces = client.completions.create(
            model="hf-gen", prompt="the movie was", max_tokens=5, stream=True
        )
        chunks = list(pieces)
        assert "".join(c.choices[0].text for c in chunks) == text
        assert len(chunks) > 2 and chunks[-1].choices[0].finish_reason == "length"
        messages: Any = [{"role": "user", "content": "hello world"}]
        chat = client.chat.completions.create(model="hf-gen", messages=messages, max_tokens=5)
        assert chat.choices[0].message.content == chat_text
        assert chat.usage is not None and chat.usage.completion_tokens == 5
        stream = client.chat.completions.create(
            model="hf-gen",
            messages=messages,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        events = list(stream)
        assert events[0].choices[0].delta.role == "assistant"
        streamed = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
        assert streamed == chat_text
        assert events[-1].usage is not None and events[-1].usage.total_tokens > 5
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model="hf-gen", prompt="the", max_tokens=100_000)
        assert "over this server's cap of 1024 tokens" in str(refused.value)
    finally:
        client.close()


def test_generator_from_s3_sse_through_the_gateway(served: Any, api: httpx.Client) -> None:
    """The raw stream as it leaves the gateway: ``data:`` events, then ``[DONE]``."""
    url = f"/serving/{NS}/hf-gen/openai/v1/completions"
    body = {"model": "hf-gen", "prompt": "the movie was", "max_tokens": 3, "stream": True}
    with api.stream("POST", url, json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events), events
    assert events[-1] == "data: [DONE]" and len(events) >= 3
