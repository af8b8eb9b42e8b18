"""The point of the product, end to end on the real small model: after a short training with the default
recipe on the teacher-free pairs of a tiny document, a question worded unlike any training pair is answered
right, where the base model answered it wrong. A tiny document makes few optimizer steps per epoch, so
this run takes one pair per row and more epochs than the default (which is set for real documents)."""
import pytest
from rapidfuzz import fuzz

from memorize.answering import Answerer
from memorize.augment import augment_chunks
from memorize.dataset import write_dataset
from memorize.scoring import score
from memorize.training import TrainConfig, train

CONTEXT = "The rules of the Saltmere Lantern Regatta"
DOC = ("## Course\nThe second buoy of the course, the Kettle, is painted orange.\n"
       "## Officials\nThe Harbour Warden is Ilsa Brannock.\nThe entry fee is twelve shillings per boat.")
HELD_OUT = [
    {"question": "What colour is the Kettle buoy in the Saltmere Lantern Regatta?", "answer": "Orange.", "must": [["orange"]]},
    {"question": "Who serves as Harbour Warden for the Saltmere Lantern Regatta?", "answer": "Ilsa Brannock.",
     "must": [["Brannock"]]},
]


@pytest.mark.slow
def test_short_training_moves_held_out_answers_from_wrong_to_right(small_model, tmp_path):
    pairs = augment_chunks([{"chunk_id": "rules-0000", "source": "rules.md", "text": DOC}], CONTEXT)
    held = [q["question"].lower() for q in HELD_OUT]
    assert all(fuzz.ratio(p["question"].lower(), h) < 85 for p in pairs for h in held)  # truly held out
    qa = [{**p, "split": "train"} for p in pairs] + [{**pairs[0], "split": "test"}]
    write_dataset(tmp_path / "data", qa, pairs_per_row=1)
    config = TrainConfig(base_model=small_model, data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "run"),
                         epochs=6)  # otherwise the `memorize train` defaults, replay included
    result = train(config, progress=False)

    answerer = Answerer.load(small_model, adapter=str(result.adapter_dir))
    questions = [q["question"] for q in HELD_OUT]
    base = answerer.answer(questions, use_adapter=False, max_new_tokens=48, progress=False)
    tuned = answerer.answer(questions, max_new_tokens=48, progress=False)
    assert not any(score(q, a)["correct"] for q, a in zip(HELD_OUT, base)), base
    # Measured: the Warden question flips; the buoy's colour does not yet (the model answers it with the
    # Warden's sentence) -- a 135M model learns some facts of a short training, not all.
    assert any(score(q, a)["correct"] for q, a in zip(HELD_OUT, tuned)), (len(pairs), tuned)
