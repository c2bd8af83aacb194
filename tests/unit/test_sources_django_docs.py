"""rST cleaning and role rendering of the Django docs parser, on tiny rST strings."""

import io
import tarfile

from bertops.data.sources import django_docs as dd

RST = """\
======
Models
======

.. module:: django.db.models
   :synopsis: Models.

A model is the source of information. It subclasses
:class:`~django.db.models.Model` and has :meth:`its own save <Model.save>`.

Example::

    class Person(models.Model):
        name = models.CharField()

.. code-block:: python

    print("dropped")

.. note::

    Set :setting:`DEBUG` to ``False`` in production.

* First item with :func:`django.shortcuts.render`
  continued on a second line.
* See :doc:`/topics/db/queries` and :ref:`table-names`.

=====  ======
Name   Value
=====  ======
a      b
=====  ======

.. _a-target:

Uses `Python <https://python.org>`__ and fields_, **bold** and *emphasis* [#]_.

__ https://example.com
"""


def texts():
    return [p.text for p in dd.paragraphs(RST)]


def test_block_structure_is_dropped():
    out = texts()
    joined = " ".join(out)
    assert "Models" not in out and "======" not in joined  # heading and its adornment
    assert "synopsis" not in joined and "django.db.models " not in joined  # directive + option
    assert "Person" not in joined and "dropped" not in joined  # literal block, code-block
    assert "Name" not in joined and "Value" not in joined  # simple table
    assert "example.com" not in joined and "a-target" not in joined  # link targets
    assert "Example:" in out  # "Example::" keeps one colon


def test_roles_render_as_sphinx_shows_them():
    first = dd.paragraphs(RST)[0]
    assert first.text == "A model is the source of information. It subclasses Model and has its own save."
    assert [(first.text[a:b], t) for a, b, t in first.entities] == [("Model", "class"), ("its own save", "method")]


def test_prose_directive_body_kept_with_entities():
    note = next(p for p in dd.paragraphs(RST) if p.text.startswith("Set "))
    assert note.text == "Set DEBUG to False in production."
    assert [(note.text[a:b], t) for a, b, t in note.entities] == [("DEBUG", "setting")]


def test_list_items_and_non_entity_roles():
    out = texts()
    assert "First item with django.shortcuts.render continued on a second line." in out
    item = next(p for p in dd.paragraphs(RST) if p.text.startswith("See "))
    assert item.text == "See queries and table names."
    assert item.entities == []  # :doc: and :ref: are not entity types


def test_inline_markup_stripped():
    assert "Uses Python and fields, bold and emphasis." in texts()


def test_render_role_forms():
    assert dd.render_role("class", "~a.b.C") == "C"
    assert dd.render_role("meth", "text <target>") == "text"
    assert dd.render_role("meth", "!nolink") == "nolink"
    assert dd.render_role("attr", "Model.pk") == "Model.pk"


def test_read_sdist_takes_only_docs_txt(tmp_path):
    path = tmp_path / "django-0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in [("django-0.0/docs/intro/a.txt", "One. Two."), ("django-0.0/docs/conf.py", "x"),
                           ("django-0.0/django/x.txt", "no")]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    docs = dd.read_sdist(path)
    assert [(d, [p.text for p in ps]) for d, ps in docs] == [("django-docs/intro/a", ["One. Two."])]
