"""validation.rules.control_character_error: control characters other than tab and newline are
rejected wherever a record holds text (the integration cases in tests/integration/test_validate.py
check the stage names file, record and rule for the corpus and the task files)."""

import pytest

from bertops.validation import rules


@pytest.mark.parametrize("text", ["plain text", "tab\tand\nnewline are fine", "soft\u00adhyphen (format, not control)",
                                  "é ü ß 中文 — “quotes”", ""])
def test_allowed_text(text):
    assert rules.control_character_error({"id": "a", "text": text}) is None


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x0b", "\x0c", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"])
def test_every_other_control_character_is_rejected(char):
    detail = rules.control_character_error({"id": "a", "text": f"abc{char}def"})
    assert detail is not None and detail.startswith(f"text has control character U+{ord(char):04X} at offset 3")


def test_nested_fields_are_named():
    token_rec = {"id": "t", "tokens": ["Call", "save\x0c", "now"], "ner_tags": ["O", "B-method", "O"]}
    assert rules.control_character_error(token_rec).startswith("tokens[1] has control character U+000C at offset 4")
    qa_rec = {"id": "q", "question": "Which?", "context": "A bank.",
              "answers": {"text": ["ba\x00nk"], "answer_start": [2]}}
    assert rules.control_character_error(qa_rec).startswith("answers.text[0] has control character U+0000")
    pair_rec = {"id": "p", "sentence1": "fine", "sentence2": "not\x1b fine", "label": True}
    assert rules.control_character_error(pair_rec).startswith("sentence2 has")
    assert rules.control_character_error({"id": "ok", "labels": [1, True, None, 2.5]}) is None
