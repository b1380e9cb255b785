"""RULER's two QA tasks (NVIDIA/RULER, scripts/data/synthetic/qa.py): a question over many documents.

``qa_1`` reads SQuAD 2.0 (RULER's ``json/squad.json``, the dev set ``dev-v2.0.json``), ``qa_2`` HotpotQA
(``json/hotpotqa.json``, ``hotpot_dev_distractor_v1.json``), each given with ``--lc-data``
(``ruler_squad=PATH``, ``ruler_hotpotqa=PATH``); neither file ships here. As in RULER: every distinct
paragraph is a document; sample ``i`` asks question ``i`` (answerable ones only), its gold documents
among distractors, first the other paragraphs of the same article (SQuAD), then any others, repeated
when the context wants more than there are; documents numbered "Document k:" and joined by blank
lines; the answer is right when any reference answer is in the prediction (``string_match_part``).

Different from RULER, so that a prompt fills its context exactly and the depth map covers QA too: the
distractors come in a fixed order per sample (RULER samples a fresh set for each trial size of its
binary search), and the first gold document stands at the sample's depth (the others at random
depths; RULER shuffles all of them).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .ruler_tasks import Draft, UnitSeq

QA = ("Answer the question based on the given documents. Only give me the answer and do not output any other "
      "words.\n\nThe following are given documents.\n\n{context}\n\nAnswer the question based on the given "
      "documents. Only give me the answer and do not output any other words.\n\nQuestion: {query}")
QA_PREFIX = " Answer:"
DOCUMENT = "Document {i}:\n"
# task: (its --lc-data key, the file RULER reads, named for the skip line)
QA_DATA = {"qa_1": ("ruler_squad", "SQuAD 2.0 dev JSON (dev-v2.0.json)"),
           "qa_2": ("ruler_hotpotqa", "HotpotQA dev distractor JSON (hotpot_dev_distractor_v1.json)")}


@dataclass(frozen=True)
class Question:
    query: str
    answers: tuple[str, ...]
    gold: tuple[int, ...]  # document indexes
    near: tuple[int, ...] = ()  # the same article's other paragraphs (SQuAD), the first distractors


@dataclass(frozen=True)
class QAData:
    questions: tuple[Question, ...]
    docs: tuple[str, ...]


def _load(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable as JSON ({exc}); pass RULER's QA file with --lc-data") from None


def read_squad(path: Path) -> QAData:
    """qa.py's read_squad: documents sorted and deduplicated, answerable questions in file order."""
    data = _load(path)
    try:
        articles = data["data"]  # type: ignore[index]
        docs = sorted({p["context"] for a in articles for p in a["paragraphs"]})
        index = {c: i for i, c in enumerate(docs)}
        questions = []
        for a in articles:
            mine = [index[p["context"]] for p in a["paragraphs"]]
            for p in a["paragraphs"]:
                own = index[p["context"]]
                for q in p["qas"]:
                    if not q.get("is_impossible", False):
                        questions.append(Question(q["question"], tuple(x["text"] for x in q["answers"]), (own,),
                                                  tuple(i for i in mine if i != own)))
    except (KeyError, TypeError) as exc:
        raise DataError(f"ruler_squad {path}: not SQuAD's layout (data -> paragraphs -> context, qas; missing "
                        f"{exc}); pass SQuAD 2.0's dev-v2.0.json") from None
    return QAData(tuple(questions), tuple(docs))


def read_hotpotqa(path: Path) -> QAData:
    """qa.py's read_hotpotqa: a document is "title\\nsentences", every question's context documents gold."""
    data = _load(path)
    try:
        docs = sorted({f"{t}\n{''.join(s)}" for d in data for t, s in d["context"]})  # type: ignore[union-attr]
        index = {c: i for i, c in enumerate(docs)}
        questions = [Question(d["question"], (d["answer"],), tuple(index[f"{t}\n{''.join(s)}"] for t, s in d["context"]))
                     for d in data]  # type: ignore[union-attr]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"ruler_hotpotqa {path}: not HotpotQA's layout (a list of question, answer, context "
                        f"[[title, sentences]]; {exc}); pass hotpot_dev_distractor_v1.json") from None
    return QAData(tuple(questions), tuple(docs))


def missing(task: str) -> str:
    """The one line said when a QA task's file was not given (its skip reason, and the error of loading)."""
    key, what = QA_DATA[task]
    return f"ruler_{task}: RULER's QA task reads {what}, not shipped here; pass --lc-data {key}=PATH"


_DATA: dict[tuple[str, str], QAData] = {}


def qa_data(task: str, where: str) -> QAData:
    """The task's questions and documents, read once per process."""
    if not where:
        raise DataError(missing(task))
    if (task, where) not in _DATA:
        read = read_squad if task == "qa_1" else read_hotpotqa
        got = read(Path(where))
        if not got.questions:
            raise DataError(f"{QA_DATA[task][0]} {where}: no answerable question in it")
        _DATA[(task, where)] = got
    return _DATA[(task, where)]


class Labels(UnitSeq):
    """The documents' labels, "Document 1:\\n", "Document 2:\\n", ... as units."""

    key = "qa-labels"

    def unit(self, i: int) -> str:
        return DOCUMENT.format(i=i + 1)


class Distractors(UnitSeq):
    """One sample's distractor documents: its article's other paragraphs, then every other document in an
    order drawn from the sample's seed, round again when the context wants more than there are. Each unit
    ends with the blank line that separates documents."""

    def __init__(self, data: QAData, question: Question, rng: random.Random) -> None:
        near = list(question.near)
        rng.shuffle(near)
        taken = set(question.gold) | set(near)
        rest = [i for i in range(len(data.docs)) if i not in taken]
        rng.shuffle(rest)
        self.order = near + rest or list(question.gold)  # a file of gold documents only repeats them
        self.docs = data.docs

    def unit(self, i: int) -> str:
        return self.docs[self.order[i % len(self.order)]] + "\n\n"


def qa(task: str, index: int, rng: random.Random, depth: float, data: QAData) -> Draft:
    """Sample ``index``: question ``index`` of the file (round again past its last), its gold documents
    among the distractors, the first at ``depth``."""
    q = data.questions[index % len(data.questions)]
    before, _, after = QA.format(context="\0", query=q.query).partition("\0")
    gold = [(depth if k == 0 else rng.random(), data.docs[g] + "\n\n") for k, g in enumerate(q.gold)]
    # the last document's blank line is the template's (the draft drops one newline of the last unit)
    return Draft(before=before, after=after.removeprefix("\n"), answer_prefix=QA_PREFIX, answers=list(q.answers),
                 depth=depth, newline=True, seq=Distractors(data, q, rng), inserts=gold, labels=Labels())
