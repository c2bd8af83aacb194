"""extractive_qa (SQuAD format): the answer is a span of the context.

Features: question + context, long contexts split into windows of max_seq_length tokens
overlapping by doc_stride (tokenizer `return_overflowing_tokens`, as the Hugging Face QA
examples); a window without the whole answer points at [CLS] (position 0). The head gives a start
and an end logit per token; `best_span` picks the best valid span over all windows of an example
and scores it with its probability (softmax over the window's start logits x over its end logits).
Inputs: (question, context). Records: question, context, answers {"text": [...], "answer_start": [...]}.
Metric: the official SQuAD v1.1 exact match and token F1 (as fractions, not x100).
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Sequence
from typing import Any

from ._base import (
    NOT_CHECKED,
    BertopsError,
    Column,
    RecordRule,
    TaskSpec,
    TaskType,
    check_lengths,
    is_str_list,
    need_pair,
)

# Validation rule names (per record; the column checks are named "<check>:<field>")
ANSWERS_WELL_FORMED = "answers_well_formed"
ANSWER_SPAN = "answer_span"


# -- features ---------------------------------------------------------------------------------

def _max_query_tokens(spec: TaskSpec) -> int:
    # Room for [CLS] q [SEP] c [SEP] with a context window longer than doc_stride (tokenizers
    # refuses otherwise); half the sequence at most, as BERT's max_query_length 64 of 384.
    n = min(spec.max_seq_length // 2, spec.max_seq_length - spec.doc_stride - 4)
    if n < 1:
        raise BertopsError(f"task {spec.name!r}: doc_stride {spec.doc_stride} leaves no room in "
                           f"max_seq_length {spec.max_seq_length}")
    return n


def _truncate_questions(tokenizer, spec: TaskSpec, questions: Sequence[str]) -> list[str]:
    limit = _max_query_tokens(spec)
    enc = tokenizer(list(questions), add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offsets in zip(questions, enc["offset_mapping"]):
        out.append(q if len(offsets) <= limit else q[:offsets[limit - 1][1]])
    return out


def encode_qa(tokenizer, spec: TaskSpec, questions: Sequence[str], contexts: Sequence[str],
              answers: Sequence[dict] | None = None) -> list[dict]:
    """Question + context windows (the Hugging Face run_qa preprocessing).

    Each feature keeps `example_index` and `offset_mapping` (character span per token; None for
    question/special tokens) for `best_span`. With `answers` (SQuAD dicts; the first answer is the
    target), `start_positions`/`end_positions` are token positions in the window, or 0 ([CLS])
    when the answer is not wholly inside it.
    """
    questions = _truncate_questions(tokenizer, spec, questions)
    enc = tokenizer(questions, list(contexts), truncation="only_second", max_length=spec.max_seq_length,
                    stride=spec.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    feats = []
    for i in range(len(enc["input_ids"])):
        ex = enc["overflow_to_sample_mapping"][i]
        seq_ids = enc.sequence_ids(i)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq_ids)]
        f = {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
             "attention_mask": enc["attention_mask"][i], "example_index": ex, "offset_mapping": offsets}
        if answers is not None:
            f["start_positions"], f["end_positions"] = _answer_positions(answers[ex], offsets)
        feats.append(f)
    return feats


def _answer_positions(answer: dict, offsets: list) -> tuple[int, int]:
    if not answer.get("text"):
        return 0, 0
    start_char = answer["answer_start"][0]
    end_char = start_char + len(answer["text"][0])
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if not ctx or offsets[ctx[0]][0] > start_char or offsets[ctx[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in ctx if offsets[i][1] > start_char)
    end = next(i for i in reversed(ctx) if offsets[i][0] < end_char)
    return start, end


# -- decoding ---------------------------------------------------------------------------------

def _log_softmax(xs: Sequence[float]) -> list[float]:
    m = max(xs)
    log_z = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - log_z for x in xs]


def best_span(windows: Sequence[dict], context: str, max_answer_length: int, n_best: int = 20) -> dict:
    """Best answer span of one example over all its windows.

    Each window: {"start_logits", "end_logits", "offset_mapping"} (offsets None outside the
    context). A span is valid if both ends are context tokens, start <= end and it is at most
    max_answer_length tokens; the chosen span is the one with the highest start_logit + end_logit
    (`logit_score`). Only the n_best start and end candidates of each window are paired (as the
    BERT reference code does) to keep it O(n_best²).
    Its `score` is a probability in [0, 1]: softmax(start logits)[start] x softmax(end logits)[end]
    over the tokens of the window it came from, the model's probability of exactly that span (in a
    window, a higher logit sum is a higher probability).
    Returns {"text", "score", "logit_score", "start", "end"} (character offsets; "", 0.0, None, -1,
    -1 when no span is valid).
    """
    best = {"text": "", "score": 0.0, "logit_score": None, "start": -1, "end": -1}
    best_logit, chosen = -math.inf, None
    for w in windows:
        starts, ends, offsets = list(w["start_logits"]), list(w["end_logits"]), w["offset_mapping"]
        n = min(len(starts), len(ends), len(offsets))
        top_s = sorted(range(n), key=lambda i: starts[i], reverse=True)[:n_best]
        top_e = sorted(range(n), key=lambda i: ends[i], reverse=True)[:n_best]
        for s in top_s:
            if offsets[s] is None:
                continue
            for e in top_e:
                if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                logit_score = float(starts[s]) + float(ends[e])
                if logit_score > best_logit:
                    best_logit, a, b = logit_score, offsets[s][0], offsets[e][1]
                    best = {"text": context[a:b], "score": 0.0, "logit_score": logit_score, "start": a, "end": b}
                    chosen = (starts, ends, n, s, e)
    if chosen is not None:
        starts, ends, n, s, e = chosen
        log_p = _log_softmax([float(x) for x in starts[:n]])[s] + _log_softmax([float(x) for x in ends[:n]])[e]
        best["score"] = min(1.0, math.exp(log_p))
    return best


def postprocess_qa(features: Sequence[dict], start_logits: Sequence[Sequence[float]],
                   end_logits: Sequence[Sequence[float]], contexts: Sequence[str],
                   max_answer_length: int, n_best: int = 20) -> list[dict]:
    """`best_span` for every example, grouping features by their `example_index`."""
    windows: list[list[dict]] = [[] for _ in contexts]
    for f, s, e in zip(features, start_logits, end_logits):
        windows[f["example_index"]].append({"start_logits": s, "end_logits": e,
                                            "offset_mapping": f["offset_mapping"]})
    return [best_span(w, c, max_answer_length, n_best) for w, c in zip(windows, contexts)]


# -- metric: the official SQuAD v1.1 evaluation (evaluate-v1.1.py), kept verbatim in behaviour;
# written here because it is 20 lines and the `evaluate` package would pull a hub client.

def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def squad_f1(prediction: str, ground_truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:  # v1.1 rule: also 0 when both normalise to empty
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(pred_texts: Sequence[str], gold_answer_lists: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and token F1, each the max over an example's gold answers, averaged."""
    check_lengths(pred_texts, gold_answer_lists)
    if not pred_texts:
        raise ValueError("no examples to score")
    em = f1 = 0.0
    for pred, golds in zip(pred_texts, gold_answer_lists):
        golds = list(golds) or [""]  # no gold answer: only the empty prediction matches
        em += max(squad_exact_match(pred, g) for g in golds)
        f1 += max(squad_f1(pred, g) for g in golds)
    n = len(pred_texts)
    return {"exact_match": em / n, "f1": f1 / n}


# -- validation rules (plain Python; None = fine, else what is wrong) -------------------------------

def answers_error(answers: Any) -> str | None:
    """SQuAD format: {"text": [str, ...], "answer_start": [int, ...]}, same length, at least one."""
    if not isinstance(answers, dict):
        return f"answers is a {type(answers).__name__}, not an object"
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not is_str_list(texts):
        return "answers.text is not a list of strings"
    if not isinstance(starts, list) or not all(type(s) is int for s in starts):  # bool is not an offset
        return "answers.answer_start is not a list of integers"
    if len(texts) != len(starts):
        return f"{len(texts)} answer texts but {len(starts)} answer_start offsets"
    if not texts:
        return "no answer"
    return None


def answer_span_error(context: Any, answers: dict) -> str | None:
    """Each answer text must be exactly context[answer_start : answer_start + len(text)]."""
    if not isinstance(context, str):
        return None  # the type rules report this
    for i, (text, start) in enumerate(zip(answers["text"], answers["answer_start"])):
        if not text.strip():
            return f"answer {i} is empty"
        if start < 0 or start + len(text) > len(context):
            return f"answer {i} {text!r} at {start} lies outside the context ({len(context)} chars)"
        found = context[start:start + len(text)]
        if found != text:
            return f"answer {i} {text!r} != context[{start}:{start + len(text)}] {found!r}"
    return None


def _answers_rule(rec: dict) -> Any:
    answers = rec.get("answers")
    return NOT_CHECKED if not isinstance(answers, dict) else answers_error(answers)


def _span_rule(rec: dict) -> Any:
    answers = rec.get("answers")
    if not isinstance(answers, dict) or answers_error(answers):
        return NOT_CHECKED  # reported by the column checks or answers_well_formed
    return answer_span_error(rec.get("context"), answers)


class ExtractiveQA(TaskType):
    name = "extractive_qa"
    pair_input = True
    pair_parts = ("question", "context")
    needs_labels = False
    metric_names = ("exact_match", "f1")
    primary_metric = "f1"

    def num_labels(self, spec: TaskSpec) -> int:
        return 2  # start / end

    def record_input(self, spec: TaskSpec, rec: dict) -> Any:
        return (rec["question"], rec["context"])

    def gold_label(self, spec: TaskSpec, rec: dict) -> list[str]:
        """The acceptable answer texts."""
        return list(rec.get("answers", {}).get("text", []))

    def training_target(self, spec: TaskSpec, rec: dict) -> dict:
        return rec["answers"]

    def normalize_input(self, spec: TaskSpec, x: Any) -> Any:
        return need_pair(self, spec, x)

    def check_record(self, spec: TaskSpec, rec: dict) -> tuple[str, str] | None:
        for key in ("question", "context"):
            if key not in rec:
                return f"{self.name} record has field {key!r}", ""
        answers = rec.get("answers")
        if answers is not None:
            texts, starts = answers.get("text", []), answers.get("answer_start", [])
            if len(texts) != len(starts):
                return "answers.text and answers.answer_start align", ""
            for t, s in zip(texts, starts):
                if rec["context"][s:s + len(t)] != t:
                    return "answer text is found at answer_start in context", f"{t!r} at {s}"
        return None

    # -- model -----------------------------------------------------------------------------------

    def encode(self, tokenizer, spec: TaskSpec, inputs: Sequence[Any],
               golds: Sequence[dict] | None = None) -> list[dict]:
        """golds: SQuAD `answers` dicts ({"text": [...], "answer_start": [...]})."""
        return encode_qa(tokenizer, spec, [q for q, _ in inputs], [c for _, c in inputs], golds)

    def head(self, spec: TaskSpec, in_dim: int, pooled_dim: int, dropout: float):
        from torch import nn

        return nn.Linear(in_dim, 2)  # start / end logits per token, as BertForQuestionAnswering

    def loss(self, spec: TaskSpec, logits, batch: dict):
        from torch import nn

        # Positions beyond the (padded) window are clamped, as BertForQuestionAnswering does.
        ce = nn.functional.cross_entropy
        n = logits.size(1)
        start = ce(logits[..., 0], batch["start_positions"].clamp(0, n - 1))
        end = ce(logits[..., 1], batch["end_positions"].clamp(0, n - 1))
        return (start + end) / 2

    def decode(self, spec: TaskSpec, inputs, features, logits) -> list[dict]:
        spans = postprocess_qa(features, [lg[:, 0].tolist() for lg in logits], [lg[:, 1].tolist() for lg in logits],
                               [c for _, c in inputs], spec.max_answer_length)
        # score: the span's probability (best_span); logit_score: the start + end logits it was chosen by
        return [{"answer": s["text"], "score": s["score"], "logit_score": s["logit_score"], "start": s["start"],
                 "end": s["end"]} for s in spans]

    def flat(self, out: dict) -> dict:
        return {**out, "prediction": out["answer"]}

    def prediction(self, decoded: dict) -> Any:
        return decoded["answer"]

    def describe(self, pred: dict) -> str:
        return f"{pred['answer']!r}\tscore={pred['score']:.3f}\tchars={pred['start']}:{pred['end']}"

    # -- evaluation ------------------------------------------------------------------------------

    def metrics(self, pred: Sequence, gold: Sequence, labels: Sequence | None = None) -> dict[str, float]:
        return squad_metrics(pred, gold)

    def majority_predictions(self, spec: TaskSpec, train_records: Sequence[dict],
                             test_records: Sequence[dict]) -> list:
        """The first whitespace word of the context. An empty answer would score exactly 0 by
        definition; the first word is the simplest legal span and shows how often a no-skill
        span overlaps the answer (SQuAD F1 strips articles, so "The ..." contexts still score 0)."""
        return [(r["context"].split() or [""])[0] for r in test_records]

    # -- validation ------------------------------------------------------------------------------

    def columns(self, tp) -> list[Column]:
        return [Column("title", "str"), Column("context", "text"), Column("question", "text"),
                Column("answers", "dict")]

    def record_rules(self, tp) -> list[RecordRule]:
        return [RecordRule(ANSWERS_WELL_FORMED, _answers_rule), RecordRule(ANSWER_SPAN, _span_rule)]

    def example_inputs(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list:
        return [rec.get("question"), rec.get("context")]

    def prose(self, rec: dict, text_fields: Sequence[str], tokens_field: str) -> list[str]:
        return [rec[f] for f in ("context", "question") if isinstance(rec.get(f), str)]


TASK_TYPE = ExtractiveQA()
