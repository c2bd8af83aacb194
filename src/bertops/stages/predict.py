"""`bertops predict MODEL_DIR TASK [inputs...]`: print a fine-tuned model's predictions.

Inputs on the command line: a text; 'text_a|||text_b' for a pair; 'question|||context' for QA; words
separated by spaces for token tagging. With no inputs, JSON lines are read from stdin: each a
record with the task's data fields (as in data/tasks/<task>/*.jsonl), a string, or a list.
Output, one block per input: the label with its probability (and every label's); the words with
their tags (word/TAG); the answer span with its score and character offsets.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bertops.errors import BertopsError

SEP = "|||"


def _parse_arg(task_type, text: str):
    """A command-line input: 'A|||B' for the task types that take two texts."""
    if task_type.pair_input:
        a, sep, b = text.partition(SEP)
        if not sep:
            what = SEP.join(task_type.pair_parts)
            raise BertopsError(f"a {task_type.name} input is '{what}', got {text!r}")
        return (a.strip(), b.strip())
    return text


def _read_stdin() -> list:
    out = []
    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise BertopsError(f"stdin line {lineno}: not JSON ({e})") from None
    return out


def main(args) -> int:
    from transformers.utils import logging as hf_logging

    from bertops.model.multitask import MultiTaskModel, get_task_type

    hf_logging.disable_progress_bar()  # keep the output to the predictions
    from bertops.train.finetune import task_model_dir

    model_dir = Path(args.model_dir)
    if not model_dir.is_dir():
        raise BertopsError(f"{model_dir}: no such model directory (run `bertops stage finetune`)")
    model_dir = task_model_dir(model_dir, args.task)  # single_task mode: that task's own model
    model = MultiTaskModel.from_pretrained(model_dir)
    if args.task not in model.tasks:
        raise BertopsError(f"unknown task {args.task!r}; {model_dir} has {sorted(model.tasks)}")
    task_type = get_task_type(model.tasks[args.task].type)
    inputs = [_parse_arg(task_type, x) for x in args.inputs] if args.inputs else _read_stdin()
    if not inputs:
        raise BertopsError("no inputs: pass texts as arguments or JSON lines on stdin")
    for pred in model.predict(args.task, inputs):
        print(task_type.describe(pred))
    return 0
