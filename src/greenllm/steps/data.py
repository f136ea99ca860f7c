"""Training data for the train, distill and lora steps: sources -> token batches.

A source is a plain-text file, a SQuAD-style JSON file (``{"data": [{"paragraphs": [...]}]}``),
``builtin:NAME``
(the samples shipped in ``greenllm/data``, e.g. ``builtin:wiki-sample``, ``builtin:squad-sample``),
an instruction JSONL file (one ``{"instruction", "input"?, "output"}`` or ``{"prompt",
"response"}`` object per line), a list of strings, or a ``datasets`` dataset with a ``text``
column. Three tasks shape the examples:

- ``lm``: all text is tokenized, joined with EOS and cut into fixed ``seq_len`` blocks; every
  token is a target.
- ``qa``: ``Context: ...\\nQuestion: ...\\nAnswer:`` is the prompt and the first reference
  answer the target; only answer tokens carry loss.
- ``instruct``: the instruction (plus input) is the prompt and the output the target.

A batch is a dict of tensors ``input_ids``, ``attention_mask`` and ``labels`` (-100 where no
loss is taken), the shape every Hugging Face causal LM accepts. torch is imported inside
functions only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

IGNORE_INDEX = -100
TASKS = ("lm", "qa", "instruct")


@dataclass(frozen=True)
class Example:
    """One training example as text: ``prompt`` carries no loss, ``target`` does."""

    prompt: str
    target: str


# ----------------------------------------------------------------------------- reading sources
def _read_text(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise DataError(f"{path}: the file is empty; give a text file with training text")
    return [text]


def _read_squad(path: Path, obj: Any) -> list[Example]:
    out: list[Example] = []
    try:
        articles = obj["data"]
        for art in articles:
            for para in art["paragraphs"]:
                ctx = para["context"].strip()
                for qa in para["qas"]:
                    answers = qa.get("answers") or []
                    if not answers:
                        continue  # SQuAD 2.0 unanswerable questions carry no target
                    out.append(
                        Example(
                            prompt=f"Context: {ctx}\nQuestion: {qa['question'].strip()}\nAnswer:",
                            target=" " + answers[0]["text"].strip(),
                        )
                    )
    except (KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: not SQuAD-style JSON (missing {exc}); expected "
            '{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}'
        ) from None
    if not out:
        raise DataError(f"{path}: no answerable questions found")
    return out


def _instruction_example(row: Any, where: str) -> Example:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs or msgs[-1].get("role") != "assistant":
            raise DataError(f"{where}: 'messages' must end with an assistant message")
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in msgs[:-1]) + "assistant:"
        return Example(prompt, " " + str(msgs[-1]["content"]))
    instr = row.get("instruction", row.get("prompt"))
    out = row.get("output", row.get("response", row.get("completion")))
    if instr is None or out is None:
        raise DataError(
            f"{where}: an instruction row needs 'instruction' (or 'prompt') and "
            f"'output' (or 'response'); got keys {sorted(row)}"
        )
    extra = row.get("input")
    prompt = f"Instruction: {instr}\n" + (f"Input: {extra}\n" if extra else "") + "Response:"
    return Example(prompt, " " + str(out))


def _read_jsonl(path: Path) -> list[Example]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
            out.append(_instruction_example(row, f"{path}:{i}"))
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def load_source(source: Any, task: str = "lm", *, field: str = "data") -> list[Any]:
    """Read ``source`` into a list of strings (task ``lm``) or of ``Example`` (qa/instruct)."""
    if task not in TASKS:
        raise ConfigError(f"task: {task!r} is not one of {', '.join(TASKS)}")
    if source is None:
        raise ConfigError(
            f"{field}: no training data; give a text file, a SQuAD-style JSON "
            "file, an instruction JSONL file or a list of strings"
        )
    from ..builtin_data import dataset_text_column, is_dataset, text_source

    if isinstance(source, (str, Path, list, tuple)) or is_dataset(source):
        source = text_source(source, field)
    if isinstance(source, Path):
        path = source
        if not path.is_file():
            raise DataError(f"{field}: file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".json":
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
            if isinstance(obj, dict) and "data" in obj:
                items: list[Any] = _read_squad(path, obj)
            elif isinstance(obj, list):
                items = [_instruction_example(r, f"{path}[{i}]") for i, r in enumerate(obj)]
            else:
                raise DataError(f"{path}: expected SQuAD-style JSON or a list of instruction rows")
        elif suffix == ".jsonl":
            items = _read_jsonl(path)
        else:
            items = _read_text(path)
    elif isinstance(source, (list, tuple)):
        if not source:
            raise DataError(f"{field}: the list of training texts is empty")
        items = []
        for i, s in enumerate(source):
            if isinstance(s, str):
                items.append(s)
            elif isinstance(s, Example):
                items.append(s)
            elif isinstance(s, dict):
                items.append(_instruction_example(s, f"{field}[{i}]"))
            else:
                raise DataError(f"{field}[{i}]: expected a string, got {type(s).__name__}")
    elif is_dataset(source):
        col = dataset_text_column(source, field)
        items = [t for t in source[col] if t and t.strip()]
    else:
        raise ConfigError(
            f"{field}: expected a file path, a list of strings or a datasets "
            f"dataset, got {type(source).__name__}"
        )
    # text for lm; examples for qa / instruct (plain strings become whole-sequence targets)
    if task == "lm":
        return [x if isinstance(x, str) else x.prompt + x.target for x in items]
    return [x if isinstance(x, Example) else Example("", x) for x in items]


# ----------------------------------------------------------------------------- tokenizing
def lm_blocks(tokenizer, texts: Sequence[str], seq_len: int, *, max_blocks: int | None = None):
    """Tokenize, join with EOS, cut into ``[seq_len]`` LongTensor blocks (last partial dropped)."""
    import torch

    if seq_len < 2:
        raise ConfigError(f"seq_len: {seq_len} is too short; use at least 2")
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    need = None if max_blocks is None else max_blocks * seq_len
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if need is not None and len(ids) >= need:
            break
    n = len(ids) // seq_len
    if max_blocks is not None:
        n = min(n, max_blocks)
    if n == 0:
        raise DataError(
            f"data: only {len(ids)} tokens, fewer than one block of seq_len="
            f"{seq_len}; give more text or lower seq_len"
        )
    t = torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)
    return list(t.unbind(0))


def encode_examples(tokenizer, examples: Sequence[Example], seq_len: int):
    """Each example -> ``(input_ids, labels)`` lists, prompt tokens masked, cut to seq_len.

    Long prompts are cut from the left so the target stays in the window."""
    out = []
    eos = tokenizer.eos_token_id
    for ex in examples:
        p = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"] if ex.prompt else []
        t = tokenizer(ex.target, add_special_tokens=False)["input_ids"]
        if eos is not None:
            t = t + [eos]
        t = t[:seq_len]
        p = p[max(0, len(p) - (seq_len - len(t))) :] if seq_len > len(t) else []
        ids = p + t
        labels = [IGNORE_INDEX] * len(p) + t
        if len(ids) >= 2:
            out.append((ids, labels))
    if not out:
        raise DataError("data: no example produced a usable token sequence")
    return out


def collate_blocks(blocks) -> dict:
    import torch

    x = torch.stack(list(blocks))
    return {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}


def collate_pairs(pairs, pad_id: int) -> dict:
    import torch

    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def split_eval(items: Sequence[Any], eval_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded shuffle, then hold out ``eval_fraction`` (at least one item when > 0)."""
    items = list(items)
    if eval_fraction <= 0:
        return items, []
    if len(items) < 2:
        raise DataError(
            f"data: {len(items)} example(s) cannot be split into train and held-out "
            "sets; give more data or set eval_fraction: 0"
        )
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(items) - 1, max(1, round(len(items) * eval_fraction)))
    held = [items[i] for i in order[:n_eval]]
    train = [items[i] for i in order[n_eval:]]
    return train, held


def batch(items: Sequence[Any], batch_size: int) -> Iterable[list]:
    for i in range(0, len(items), batch_size):
        yield list(items[i : i + batch_size])


def build_batches(
    tokenizer,
    source: Any,
    *,
    task: str = "lm",
    seq_len: int = 256,
    batch_size: int = 8,
    eval_fraction: float = 0.0,
    seed: int = 0,
    max_examples: int | None = None,
) -> tuple[list[dict], list[dict]]:
    """``source`` -> ``(train_batches, eval_batches)``: lists of batch dicts (seeded split)."""
    if tokenizer is None:
        raise ConfigError(
            "tokenizer: the training steps need the model's tokenizer "
            "(pass tokenizer= to compress(), or load the model with load_model)"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size: {batch_size} must be >= 1")
    items = load_source(source, task)
    if task == "lm":
        units = lm_blocks(tokenizer, items, seq_len, max_blocks=max_examples)
        train, held = split_eval(units, eval_fraction, seed)
        return (
            [collate_blocks(b) for b in batch(train, batch_size)],
            [collate_blocks(b) for b in batch(held, batch_size)],
        )
    if max_examples is not None:
        items = items[:max_examples]
    pairs = encode_examples(tokenizer, items, seq_len)
    train, held = split_eval(pairs, eval_fraction, seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return (
        [collate_pairs(b, pad) for b in batch(train, batch_size)],
        [collate_pairs(b, pad) for b in batch(held, batch_size)],
    )
