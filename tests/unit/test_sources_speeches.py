"""Speeches: conventions, debates grouped per debate and speaker, Hamlet by scene."""

from bertops.data.sources import speeches


def test_convention_one_document_per_speech():
    docs = speeches.convention_2012('party,speaker,text\ndemocrat,BARACK OBAMA,"Thank you.\nWe  won."\n')
    assert docs == [("speeches/convention-2012/000-barack-obama", "Thank you.\n\nWe won.")]


def test_debates_grouped_by_debate_and_speaker_in_order():
    csv = ("speaker,statement,debate,party,speaker and debate\n"
           "HOLT,Welcome.,1st,Moderator,HOLT 1st\n"
           "TRUMP,First answer.,1st,Republican,TRUMP 1st\n"
           "HOLT,Next question.,1st,Moderator,HOLT 1st\n"
           "HOLT,Hello again.,2nd,Moderator,HOLT 2nd\n")
    docs = dict(speeches.debates_2016(csv))
    assert docs["speeches/debate-2016-1st/holt"] == "Welcome.\n\nNext question."
    assert docs["speeches/debate-2016-2nd/holt"] == "Hello again."
    assert len(docs) == 3


HAMLET = """The Tragedy of Hamlet
ACT I

SCENE I. Elsinore.

FRANCISCO at his post. Enter to him BERNARDO
BERNARDO
Who's there?
FRANCISCO
Nay, answer me: stand,
and unfold yourself.
Exit

SCENE II. A room.

First Clown
Is she to be buried?
"""


def test_hamlet_scenes_and_speeches():
    docs = speeches.hamlet(HAMLET)
    assert docs == [
        ("speeches/hamlet/act-i-scene-i", "Who's there?\n\nNay, answer me: stand, and unfold yourself."),
        ("speeches/hamlet/act-i-scene-ii", "Is she to be buried?"),
    ]
