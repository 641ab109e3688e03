"""The ``huggingface`` format: a transformers model directory (``config.json``, tokenizer
files, safetensors weights) run on the CPU, as KServe's huggingfaceserver serves it.

The task is picked as KServe picks it: ``SHIPYARD_HF_TASK`` (or KServe's ``--task``) when set,
else from the first of the config's ``architectures`` by suffix (``...ForSequenceClassification``
is ``sequence_classification``, ``...ForCausalLM`` / ``...LMHeadModel`` is ``text_generation``).
Two tasks are served:

- ``sequence_classification``: V1 ``instances`` (strings) answer each text's class index, or
  with ``SHIPYARD_HF_RETURN_PROBABILITIES=true`` a ``{index: probability}`` object rounded to
  4 places (KServe's ``--return_probabilities``), or with ``SHIPYARD_HF_RETURN_RAW_LOGITS``
  the logits. V2 takes one BYTES tensor and answers ``output-0`` (INT64 indices), plus
  ``probabilities`` (FP32, one row per text) when probabilities are asked for.
- ``text_generation``: V1 strings and V2 BYTES answer each prompt's continuation (greedy, at
  most the generation config's ``max_new_tokens``, else 64, tokens); the OpenAI-compatible
  completions (:mod:`.openai_api`) call :meth:`HuggingFaceModel.generate`.

``SHIPYARD_HF_MAX_MODEL_LEN`` (KServe's ``--max_model_len``) lowers the context length found
in the config. The model server takes KServe's flags too (:func:`add_arguments`: a
predictor's ``args``) and turns them into these variables. Nothing is downloaded: the
directory is read with ``local_files_only``.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .loaders import ModelLoadError, Tensors, first_line, import_library

log = logging.getLogger(__name__)

FORMAT = "huggingface"
CLASSIFICATION = "sequence_classification"
GENERATION = "text_generation"
#: Architecture name suffixes -> task (KServe's ARCHITECTURES_2_TASK, the tasks served here).
ARCHITECTURE_TASKS = (
    ("ForSequenceClassification", CLASSIFICATION),
    ("ForCausalLM", GENERATION),
    ("LMHeadModel", GENERATION),
)
#: KServe's task names that this server does not run (yet), for the error message.
OTHER_TASKS = (
    "token_classification",
    "fill_mask",
    "text2text_generation",
    "text_embedding",
    "question_answering",
)
#: Config attributes that bound the context (KServe's _get_and_verify_max_len reads these).
LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
DEFAULT_NEW_TOKENS = 64
#: The most tokens one OpenAI completion may ask for (``SHIPYARD_HF_MAX_TOKENS`` sets it).
DEFAULT_MAX_TOKENS_CAP = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """KServe huggingfaceserver's flags, so a predictor's ``args`` written for it work."""
    group = parser.add_argument_group("huggingface format (KServe huggingfaceserver's flags)")
    group.add_argument("--task", help=f"{CLASSIFICATION} or {GENERATION} ($SHIPYARD_HF_TASK)")
    group.add_argument("--return_probabilities", action="store_true")
    group.add_argument("--return_raw_logits", action="store_true")
    group.add_argument("--max_model_len", "--max_length", dest="max_model_len", type=int)


def apply_arguments(args: argparse.Namespace) -> None:
    """The flags of :func:`add_arguments` given, as the environment the model reads."""
    if args.task:
        os.environ["SHIPYARD_HF_TASK"] = args.task
    if args.return_probabilities:
        os.environ["SHIPYARD_HF_RETURN_PROBABILITIES"] = "true"
    if args.return_raw_logits:
        os.environ["SHIPYARD_HF_RETURN_RAW_LOGITS"] = "true"
    if args.max_model_len is not None:
        os.environ["SHIPYARD_HF_MAX_MODEL_LEN"] = str(args.max_model_len)


def _positive_env(name: str) -> int | None:
    """A positive integer from the environment (None when unset); else a ModelLoadError."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ModelLoadError(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def pick_task(config: Any, requested: str | None) -> str:
    """The task to serve: ``requested`` if given, else the one the architecture implies."""
    if requested:
        task = requested.strip().lower().replace("-", "_")
        if task not in (CLASSIFICATION, GENERATION):
            raise ModelLoadError(
                f"task {requested!r} is not served; the huggingface format serves "
                f"{CLASSIFICATION} and {GENERATION} (set SHIPYARD_HF_TASK to one of them)"
            )
        return task
    architectures = list(getattr(config, "architectures", None) or [])
    if not architectures:
        raise ModelLoadError(
            "config.json names no architectures; set SHIPYARD_HF_TASK to "
            f"{CLASSIFICATION} or {GENERATION}"
        )
    for suffix, task in ARCHITECTURE_TASKS:
        if architectures[0].endswith(suffix):
            return task
    raise ModelLoadError(
        f"cannot serve architecture {architectures[0]}: the huggingface format serves "
        f"{CLASSIFICATION} (...ForSequenceClassification) and {GENERATION} (...ForCausalLM), "
        f"not {', '.join(OTHER_TASKS)}"
    )


def context_length(config: Any, tokenizer: Any, requested: int | None) -> int:
    """The longest token sequence the model takes (prompt and completion together)."""
    found = [getattr(config, k) for k in LENGTH_KEYS if isinstance(getattr(config, k, None), int)]
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 10**9:
        found.append(tokenizer_max)
    derived = min(found) if found else 2048
    if requested is not None:
        if requested > derived:
            raise ModelLoadError(
                f"SHIPYARD_HF_MAX_MODEL_LEN {requested} is over the model's context of {derived}"
            )
        return requested
    return derived


@dataclass
class Generation:
    """What one prompt generated: the new token ids, their text, and why it ended."""

    token_ids: list[int]
    text: str
    finish_reason: str


@dataclass
class SamplingParams:
    """How to generate: greedy unless ``temperature`` > 0 (OpenAI clients send 0 for greedy)."""

    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    #: Set to end the generation early (its reader went away).
    cancel: threading.Event | None = None


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """``text`` up to the first stop sequence in it, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class HuggingFaceModel:
    """A transformers model and its tokenizer, for one of the served tasks."""

    in_thread = True  # a generation takes seconds

    def __init__(self, name: str, model_dir: Path, nthread: int = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a model directory, never the hub
        self.torch = import_library("torch", FORMAT)
        self.transformers = import_library("transformers", FORMAT)
        self.name = name
        self.lock = threading.Lock()  # one forward pass or generation at a time
        self.torch.set_num_threads(nthread)
        if not (model_dir / "config.json").is_file():
            raise ModelLoadError(
                f"no config.json in {model_dir}: a huggingface model is a directory written "
                "by save_pretrained (config.json, tokenizer files, model.safetensors)"
            )
        tf = self.transformers
        tf.utils.logging.disable_progress_bar()  # no progress bars in the server's log
        try:
            self.config = tf.AutoConfig.from_pretrained(model_dir, local_files_only=True)
            self.task = pick_task(self.config, os.environ.get("SHIPYARD_HF_TASK"))
            self.tokenizer = tf.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
            auto = (
                tf.AutoModelForSequenceClassification
                if self.task == CLASSIFICATION
                else tf.AutoModelForCausalLM
            )
            self.model = auto.from_pretrained(
                model_dir, local_files_only=True, dtype=self.torch.float32
            ).eval()
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            problem = first_line(exc)
            raise ModelLoadError(
                f"{model_dir} does not load with transformers: {problem}"
            ) from None
        self.max_length = context_length(
            self.config, self.tokenizer, _positive_env("SHIPYARD_HF_MAX_MODEL_LEN")
        )
        self.max_tokens_cap = _positive_env("SHIPYARD_HF_MAX_TOKENS") or DEFAULT_MAX_TOKENS_CAP
        self.return_probabilities = _flag("SHIPYARD_HF_RETURN_PROBABILITIES")
        self.return_raw_logits = _flag("SHIPYARD_HF_RETURN_RAW_LOGITS")
        if self.tokenizer.pad_token is None and self.tokenizer.eos_token is not None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        generation_config = getattr(self.model, "generation_config", None)
        self.default_new_tokens = (
            getattr(generation_config, "max_new_tokens", None) or DEFAULT_NEW_TOKENS
        )
        log.info(
            "loaded huggingface model %s from %s (%s, %s, context %d)",
            name,
            model_dir,
            self.task,
            type(self.model).__name__,
            self.max_length,
        )

    # -- classification ------------------------------------------------------------------

    def logits(self, texts: list[str]) -> np.ndarray:
        """The classifier's logits for ``texts`` (padded together, truncated to the context)."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with self.lock, self.torch.inference_mode():
            out = self.model(**batch).logits
        return out.float().numpy()  # type: ignore[no-any-return]

    def _classify(self, texts: list[str]) -> list[Any]:
        logits = self.logits(texts)
        if self.return_raw_logits:
            return [{j: float(v) for j, v in enumerate(row)} for row in logits]
        if self.return_probabilities:
            probs = _softmax(logits)
            return [{j: round(float(p), 4) for j, p in enumerate(row)} for row in probs]
        return [int(i) for i in logits.argmax(axis=-1)]

    # -- generation ----------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """How many token ids the model's embedding takes (ids 0 to this less one)."""
        return int(self.model.get_input_embeddings().num_embeddings)

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id  # type: ignore[no-any-return]

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)  # type: ignore[no-any-return]

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The prompt of a chat: the tokenizer's chat template when it has one, else each
        message as ``role: content`` on its own line and ``assistant:`` to answer."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(  # type: ignore[no-any-return]
                messages, tokenize=False, add_generation_prompt=True
            )
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])

    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        on_token: Callable[[int], None] | None = None,
    ) -> Generation:
        """Generate after ``prompt_ids`` (blocking; call it from a thread). ``on_token`` is
        called with each new token id as it comes."""
        if self.task != GENERATION:
            raise ValueError(f"model {self.name} is a {self.task} model; it does not generate")
        torch, tf = self.torch, self.transformers
        settings: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "do_sample": False,
        }
        if params.temperature is not None and params.temperature > 0:
            settings |= {"do_sample": True, "temperature": params.temperature}
            if params.top_p is not None:
                settings["top_p"] = params.top_p
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        stoppers = _stop_criteria(tf, self.tokenizer, len(prompt_ids), params)
        with self.lock, torch.inference_mode():
            if settings["do_sample"] and params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=tf.GenerationConfig(**settings),
                streamer=_streamer(tf, on_token) if on_token else None,
                stopping_criteria=tf.StoppingCriteriaList(stoppers) if stoppers else None,
            )
        new = [int(t) for t in out[0][len(prompt_ids) :]]
        text, stopped = cut_at_stop(self.decode(new), params.stop)
        if stopped or (new and new[-1] == self.eos_token_id):
            return Generation(new, text, "stop")
        return Generation(new, text, "length")

    def _continue(self, prompts: list[str]) -> list[str]:
        texts = []
        for prompt in prompts:
            ids = self.encode(prompt)
            room = self.max_length - len(ids)
            if room <= 0:
                raise ValueError(f"a prompt of {len(ids)} tokens fills the context ({room})")
            params = SamplingParams(max_new_tokens=min(self.default_new_tokens, room))
            texts.append(self.generate(ids, params).text)
        return texts

    # -- the model server's protocol -----------------------------------------------------

    def _run(self, texts: list[str]) -> list[Any]:
        if self.task == CLASSIFICATION:
            return self._classify(texts)
        return self._continue(texts)

    def predict(self, instances: list[Any]) -> list[Any]:
        return self._run(_texts(instances))

    def predict_array(self, inputs: np.ndarray) -> np.ndarray:
        out = self._run(_texts(list(inputs.reshape(-1))))
        return np.array(out, dtype=object if self.task == GENERATION else np.int64)

    def infer(self, inputs: Tensors) -> Tensors:
        if len(inputs) != 1:
            raise ValueError(f"the model takes one BYTES tensor of texts; got {len(inputs)}")
        array = inputs[0][1]
        if array.dtype != object:
            raise ValueError("the model takes texts: send a BYTES tensor")
        texts = _texts(list(array.reshape(-1)))
        if self.task == GENERATION:
            return [("output-0", np.array(self._continue(texts), dtype=object))]
        logits = self.logits(texts)
        outputs = [("output-0", logits.argmax(axis=-1).astype(np.int64))]
        if self.return_probabilities:
            outputs.append(("probabilities", _softmax(logits).astype(np.float32)))
        return outputs

    def metadata(self) -> dict[str, Any]:
        if self.task == GENERATION:
            out = {"name": "output-0", "datatype": "BYTES", "shape": [-1]}
        else:
            out = {"name": "output-0", "datatype": "INT64", "shape": [-1]}
        return {
            "inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [out],
        }


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def _texts(items: list[Any]) -> list[str]:
    """Texts from V1 instances or V2 BYTES elements; anything else is a ValueError."""
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            item = item.decode("utf-8", errors="replace")
        if not isinstance(item, str):
            raise ValueError(f"instance {i} is a {type(item).__name__}; the model takes texts")
        texts.append(item)
    if not texts:
        raise ValueError("no texts to run")
    return texts


def _streamer(tf: Any, on_token: Callable[[int], None]) -> Any:
    """A ``generate`` streamer calling ``on_token`` per new token (the prompt comes first,
    in one put, and is skipped)."""

    class Streamer(tf.generation.streamers.BaseStreamer):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            for token in value.reshape(-1).tolist():
                on_token(int(token))

        def end(self) -> None:
            pass

    return Streamer()


def _stop_criteria(tf: Any, tokenizer: Any, prompt_len: int, params: SamplingParams) -> list[Any]:
    """Stop generating once the new text holds one of the stop sequences, or when the
    generation is cancelled (none without either)."""
    stop, cancel = params.stop, params.cancel

    class StopOnText(tf.StoppingCriteria):  # type: ignore[misc,name-defined]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            text = tokenizer.decode(input_ids[0][prompt_len:], skip_special_tokens=True)
            done = cut_at_stop(text, stop)[1]
            return input_ids.new_full((input_ids.shape[0],), done, dtype=bool)

    class StopOnCancel(tf.StoppingCriteria):  # type: ignore[misc,name-defined]
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = cancel is not None and cancel.is_set()
            return input_ids.new_full((input_ids.shape[0],), done, dtype=bool)

    return [*([StopOnText()] if stop else []), *([StopOnCancel()] if cancel else [])]
