"""openblip.eval: hand-checked retrieval, VQA, NLVR2 and caption metrics (all in percent)."""

from __future__ import annotations

import contextlib
import io
import math
import shutil

import numpy as np
import pytest
import torch

from openblip.eval import (
    SCALE,
    caption_accuracy,
    caption_metrics,
    ground_truth_ranks,
    nlvr_accuracy,
    normalize_answer,
    normalize_caption,
    process_punctuation,
    recall_at_k,
    retrieval_metrics,
    vqa_accuracy,
)
from openblip.eval import caption as caption_mod
from openblip.eval.vqa import CONTRACTIONS

# pycocoevalcap (a test dependency) and Java (installed by .ci/run when missing) are required, not optional:
# these tests fail rather than skip when either is absent, so a green run always means the metrics ran.


def needs_java(f):
    return f


def test_java_and_pycocoevalcap_present():
    from pycocoevalcap.tokenizer import ptbtokenizer  # noqa: F401

    assert shutil.which("java") is not None, "the caption metrics need a Java runtime (apt-get install default-jre)"


def test_scale_is_percent():
    assert SCALE == "percent"


# ---------------------------------------------------------------------------------------------------------------
# retrieval
# ---------------------------------------------------------------------------------------------------------------

# 3 images, 6 texts. Image 0 owns texts 0-1, image 1 texts 2-4, image 2 text 5.
IMG2TXT = [[0, 1], [2, 3, 4], [5]]
TXT2IMG = [0, 0, 1, 1, 1, 2]
# Image -> text scores. Sorted (best first):
#   image 0: t1 t2 t5 t4 t3 t0 -> gt {0, 1}: t1 at 0 (the *second* caption ranks best) -> rank 0
#   image 1: t0 t1 t3 t4 t5 t2 -> gt {2, 3, 4}: t3 at 2, t4 at 3, t2 at 5 -> rank 2 (not the first caption)
#   image 2: t0 t1 t2 t3 t4 t5 -> gt {5}: rank 5
# ranks [0, 2, 5] -> TR@1 = 1/3, TR@5 = 2/3, TR@10 = 3/3
I2T = np.array(
    [
        [0.1, 0.9, 0.8, 0.2, 0.3, 0.4],
        [0.9, 0.8, 0.1, 0.7, 0.6, 0.5],
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
    ],
    dtype=np.float32,
)
# Text -> image scores; ranks of the ground-truth image: [0, 2, 0, 2, 1, 0] -> IR@1 = 3/6, IR@5 = IR@10 = 6/6
T2I = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.2, 0.5, 0.3],
        [0.4, 0.6, 0.1],
        [0.7, 0.3, 0.5],
        [0.1, 0.2, 0.3],
        [0.3, 0.2, 0.8],
    ],
    dtype=np.float32,
)


def test_retrieval_hand_computed():
    m = retrieval_metrics(I2T, T2I, TXT2IMG, IMG2TXT)
    expected = {
        "txt_r1": 100 / 3,
        "txt_r5": 200 / 3,
        "txt_r10": 100.0,
        "txt_r_mean": (100 / 3 + 200 / 3 + 100) / 3,
        "img_r1": 50.0,
        "img_r5": 100.0,
        "img_r10": 100.0,
        "img_r_mean": 250 / 3,
        "r_mean": ((100 / 3 + 200 / 3 + 100) / 3 + 250 / 3) / 2,
    }
    assert list(m) == list(expected)
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, abs=1e-9), k
    assert m["r_mean"] == pytest.approx(75.0)
    assert ground_truth_ranks(I2T, IMG2TXT).tolist() == [0, 2, 5]
    assert ground_truth_ranks(T2I, TXT2IMG).tolist() == [0, 2, 0, 2, 1, 0]
    assert recall_at_k(I2T, IMG2TXT, ks=(1, 3, 6)) == pytest.approx({1: 100 / 3, 3: 200 / 3, 6: 100.0})


def test_retrieval_accepts_tensors_and_dicts():
    m_np = retrieval_metrics(I2T, T2I, TXT2IMG, IMG2TXT)
    m_t = retrieval_metrics(
        torch.from_numpy(I2T).to(torch.bfloat16),
        torch.from_numpy(T2I),
        dict(enumerate(TXT2IMG)),
        dict(enumerate(IMG2TXT)),
    )
    assert m_t == pytest.approx(m_np)


def _itm_eval_loop(scores_i2t, scores_t2i, txt2img, img2txt):
    """A literal loop over the original's definition (argsort reversed, first position of each ground truth)."""
    tr = []
    for i, row in enumerate(scores_i2t):
        inds = np.argsort(row)[::-1]
        tr.append(min(int(np.where(inds == t)[0][0]) for t in img2txt[i]))
    ir = []
    for t, row in enumerate(scores_t2i):
        inds = np.argsort(row)[::-1]
        ir.append(int(np.where(inds == txt2img[t])[0][0]))
    return tr, ir


def test_retrieval_ties_match_original_ordering():
    rng = np.random.default_rng(0)
    n_img, per = 12, 5
    img2txt = [list(range(i * per, (i + 1) * per)) for i in range(n_img)]
    txt2img = [i for i in range(n_img) for _ in range(per)]
    # coarse integer-valued scores: lots of ties, and -100 fillers as in BLIP's k_test re-ranking
    i2t = rng.integers(0, 4, size=(n_img, n_img * per)).astype(np.float32)
    i2t[rng.random(i2t.shape) < 0.5] = -100.0
    t2i = rng.integers(0, 3, size=(n_img * per, n_img)).astype(np.float32)
    tr, ir = _itm_eval_loop(i2t, t2i, txt2img, img2txt)
    assert ground_truth_ranks(i2t, img2txt).tolist() == tr
    assert ground_truth_ranks(t2i, txt2img).tolist() == ir
    m = retrieval_metrics(i2t, t2i, txt2img, img2txt)
    assert m["txt_r5"] == pytest.approx(100.0 * np.mean(np.array(tr) < 5))
    assert m["img_r1"] == pytest.approx(100.0 * np.mean(np.array(ir) < 1))


def test_retrieval_validates_inputs():
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(I2T, T2I.T, TXT2IMG, IMG2TXT)
    with pytest.raises(ValueError, match="entries"):
        retrieval_metrics(I2T, T2I, TXT2IMG[:-1], IMG2TXT)
    with pytest.raises(ValueError, match="out of range"):
        retrieval_metrics(I2T, T2I, [0, 0, 1, 1, 1, 3], IMG2TXT)
    with pytest.raises(ValueError, match="no ground-truth"):
        retrieval_metrics(I2T, T2I, TXT2IMG, [[0, 1], [2, 3, 4], []])
    with pytest.raises(ValueError, match="positive"):
        recall_at_k(I2T, IMG2TXT, ks=(0,))


def test_retrieval_mappings_must_cover_exactly_the_rows():
    # an extra key (a query the score matrix does not have) is an error, even when its value is out of range
    with pytest.raises(ValueError, match=r"txt2img has 1 key\(s\) outside .* 6 rows.*: 6"):
        retrieval_metrics(I2T, T2I, {**dict(enumerate(TXT2IMG)), 6: 9}, IMG2TXT)
    with pytest.raises(ValueError, match=r"img2txt has 1 key\(s\) outside .* 3 rows.*: 7"):
        retrieval_metrics(I2T, T2I, TXT2IMG, {**dict(enumerate(IMG2TXT)), 7: [3]})
    with pytest.raises(ValueError, match="img2txt has 1 key"):  # string keys are not query indices
        retrieval_metrics(I2T, T2I, TXT2IMG, {**dict(enumerate(IMG2TXT)), "0": [0]})
    with pytest.raises(ValueError, match="txt2img has no entry for query 5"):
        retrieval_metrics(I2T, T2I, dict(enumerate(TXT2IMG[:-1])), IMG2TXT)
    # values in a mapping are range-checked like those of a list
    with pytest.raises(ValueError, match=r"txt2img\[5\] = 3 is out of range for 3"):
        retrieval_metrics(I2T, T2I, {**dict(enumerate(TXT2IMG)), 5: 3}, IMG2TXT)
    with pytest.raises(ValueError, match=r"img2txt\[2\] = 6 is out of range for 6"):
        retrieval_metrics(I2T, T2I, TXT2IMG, {0: [0, 1], 1: [2, 3, 4], 2: [5, 6]})
    with pytest.raises(ValueError, match=r"gt has 1 key"):
        ground_truth_ranks(T2I, {**dict(enumerate(TXT2IMG)), -1: 0})


def test_retrieval_ground_truth_as_tensors_and_arrays():
    m = retrieval_metrics(I2T, T2I, TXT2IMG, IMG2TXT)
    same = [
        (torch.tensor(TXT2IMG), [torch.tensor(t) for t in IMG2TXT]),
        (np.array(TXT2IMG), dict(enumerate(np.array(t) for t in IMG2TXT))),
        ({i: torch.tensor(v) for i, v in enumerate(TXT2IMG)}, IMG2TXT),
        (torch.tensor(TXT2IMG, dtype=torch.float32), IMG2TXT),  # integral floats are indices
    ]
    for txt2img, img2txt in same:
        assert retrieval_metrics(I2T, T2I, txt2img, img2txt) == pytest.approx(m)
    # equal-length caption lists as one 2-D tensor
    img2txt = [[0, 1], [2, 3], [4, 5]]
    txt2img = [0, 0, 1, 1, 2, 2]
    expected = retrieval_metrics(I2T, T2I, txt2img, img2txt)
    assert retrieval_metrics(I2T, T2I, torch.tensor(txt2img), torch.tensor(img2txt)) == pytest.approx(expected)
    assert recall_at_k(T2I, torch.tensor(TXT2IMG), ks=(1,)) == {1: 50.0}
    # tensor ground truth is range-checked too, and a wrong length names the argument
    with pytest.raises(ValueError, match=r"txt2img\[5\] = 3 is out of range"):
        retrieval_metrics(I2T, T2I, torch.tensor([0, 0, 1, 1, 1, 3]), IMG2TXT)
    with pytest.raises(ValueError, match="img2txt has 2 entries"):
        retrieval_metrics(I2T, T2I, TXT2IMG, torch.tensor([[0, 1], [2, 3]]))


def test_retrieval_rejects_non_integer_indices():
    with pytest.raises(ValueError, match=r"txt2img\[1\] = 0.5 is not an integer index"):
        retrieval_metrics(I2T, T2I, [0, 0.5, 1, 1, 1, 2], IMG2TXT)
    with pytest.raises(TypeError, match=r"txt2img\[0\] must be an integer index, got bool"):
        retrieval_metrics(I2T, T2I, [False, False, True, True, True, 2], IMG2TXT)
    with pytest.raises(TypeError, match="txt2img must be a sequence, a mapping or a tensor"):
        retrieval_metrics(I2T, T2I, torch.tensor(0), IMG2TXT)


# ---------------------------------------------------------------------------------------------------------------
# VQA
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two", "2"),
        ("the dog.", "dog"),
        ("dont", "don't"),
        ("yes!", "yes"),
        ("Yes", "yes"),
        ("None", "0"),
        ("an apple", "apple"),
        ("2.5", "2.5"),  # a period before a digit stays
        ("1,000", "1000"),  # digit-comma-digit: punctuation is deleted, not spaced
        ("red/white", "red white"),
        ("black - white", "black white"),  # next to a space: deleted
        ("t-shirt", "t shirt"),
        ("  Ten\tdogs\n", "10 dogs"),
        ("isnt it", "isn't it"),
        ("Im", "im"),  # the capitalised official keys can never match (text is lower-cased first)
    ],
)
def test_vqa_normalisation(raw, expected):
    assert normalize_answer(raw) == expected


def test_vqa_contractions_table():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["dont"] == "don't" and CONTRACTIONS["youre"] == "you're"
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # the official table's own quirk, kept
    assert process_punctuation("what?") == "what "


def _answers(n_match: int, match: str = "2", other: str = "3") -> list[str]:
    return [match] * n_match + [other] * (10 - n_match)


def test_vqa_leave_one_out_accuracy():
    # 10 humans, m of them say the predicted answer. Each of the 10 leave-one-out subsets scores
    # min(matches among the other 9 / 3, 1); the question scores their mean:
    #   m=1: 9 subsets keep the match (1/3), 1 drops it (0)            -> (9 * 1/3) / 10          = 0.3
    #   m=2: 8 subsets keep both (2/3), 2 keep one (1/3)               -> (8 * 2/3 + 2 * 1/3) / 10 = 0.6
    #   m=3: 7 subsets keep all three (1), 3 keep two (2/3)            -> (7 + 3 * 2/3) / 10       = 0.9
    #   m=4: every subset keeps at least three                         -> 1.0
    preds = ["two"] * 6
    answers = [_answers(m) for m in (0, 1, 2, 3, 4, 10)]
    res = vqa_accuracy(preds, answers)
    assert res["per_question"] == pytest.approx([0.0, 30.0, 60.0, 90.0, 100.0, 100.0])
    assert res["overall"] == pytest.approx((0 + 30 + 60 + 90 + 100 + 100) / 6)


def test_vqa_breakdowns():
    preds = ["yes", "no", "2", "red"]
    answers = [["yes"] * 10, ["yes"] * 10, _answers(1), ["red"] * 10]
    res = vqa_accuracy(
        preds,
        answers,
        question_types=["is the", "is the", "how many", "what color"],
        answer_types=["yes/no", "yes/no", "number", "other"],
    )
    assert res["overall"] == pytest.approx((100 + 0 + 30 + 100) / 4)
    assert res["per_question_type"] == pytest.approx({"is the": 50.0, "how many": 30.0, "what color": 100.0})
    assert res["per_answer_type"] == pytest.approx({"yes/no": 50.0, "number": 30.0, "other": 100.0})


def test_vqa_official_ground_truth_processing():
    # The official script leaves identical ground-truth answers untouched, and otherwise only strips their
    # punctuation (no lower-casing): raw, un-normalised ground truth does not match.
    assert vqa_accuracy(["yes"], [["Yes."] * 10])["overall"] == 0.0
    assert vqa_accuracy(["yes"], [["Yes"] * 9 + ["no"]])["overall"] == 0.0
    assert vqa_accuracy(["yes"], [["yes."] * 9 + ["no"]])["overall"] == 100.0  # punctuation step applied
    # gt_processing="full" normalises every ground-truth answer completely.
    assert vqa_accuracy(["yes"], [["Yes."] * 10], gt_processing="full")["overall"] == 100.0
    assert vqa_accuracy(["yes"], [["Yes"] * 9 + ["no"]], gt_processing="full")["overall"] == 100.0


def test_vqa_validates_inputs():
    with pytest.raises(ValueError, match="predictions"):
        vqa_accuracy(["a", "b"], [["a"] * 10])
    with pytest.raises(ValueError, match="no predictions"):
        vqa_accuracy([], [])
    with pytest.raises(TypeError):
        vqa_accuracy(["a"], ["a"])
    with pytest.raises(ValueError, match="gt_processing"):
        vqa_accuracy(["a"], [["a"]], gt_processing="raw")


# ---------------------------------------------------------------------------------------------------------------
# NLVR2
# ---------------------------------------------------------------------------------------------------------------


def test_nlvr_accuracy():
    assert nlvr_accuracy([True, False, True, True], ["True", "False", "False", "True"]) == 75.0
    assert nlvr_accuracy(torch.tensor([1, 0, 1]), [True, False, False]) == pytest.approx(200 / 3)
    assert nlvr_accuracy(["false"], [0]) == 100.0
    with pytest.raises(ValueError):
        nlvr_accuracy([True], ["maybe"])
    with pytest.raises(ValueError):
        nlvr_accuracy([True, False], ["True"])
    with pytest.raises(ValueError):
        nlvr_accuracy([], [])


# ---------------------------------------------------------------------------------------------------------------
# captions
# ---------------------------------------------------------------------------------------------------------------

PERFECT = {
    1: "a man riding a wave on top of a surfboard",
    2: "two dogs playing with a frisbee in the park",
    3: "a plate of food with broccoli and rice",
    4: "a red double decker bus driving down the street",
}


def test_caption_accuracy():
    refs = {1: ["A dog sits on a mat.", "a dog"], 2: ["two cats"], 3: ["a horse"]}
    preds = {1: "a  dog sits on a mat", 2: "Two cats.", 3: "a cow"}
    assert normalize_caption("  A  Dog.  ") == "a dog"
    assert caption_accuracy(preds, refs) == {"exact": pytest.approx(200 / 3)}
    assert caption_accuracy(["a dog"], [["A dog."]]) == {"exact": 100.0}


def test_caption_input_validation():
    with pytest.raises(ValueError, match="same images"):
        caption_metrics({1: "a"}, {2: ["a"]}, spice=False)
    with pytest.raises(ValueError, match="empty"):
        caption_metrics({1: "a"}, {1: []}, spice=False)
    with pytest.raises(TypeError):
        caption_metrics(["a"], {1: ["a"]}, spice=False)
    with pytest.raises(ValueError, match="several"):
        caption_metrics([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}], {1: ["a"]}, spice=False)


def test_java_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(caption_mod.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="Java"):
        caption_metrics(PERFECT, {k: [v] for k, v in PERFECT.items()}, spice=False)


@needs_java
def test_caption_perfect_match():
    m = caption_metrics(PERFECT, {k: [v] for k, v in PERFECT.items()}, spice=False)
    assert set(m) == {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"}
    for n in range(1, 5):
        assert m[f"bleu{n}"] == pytest.approx(100.0, abs=1e-6)
    assert m["meteor"] > 0
    assert m["rouge_l"] == pytest.approx(100.0)
    # CIDEr-D of a caption against an identical single reference is 10 (x 100 in percent) as long as it has
    # informative n-grams, i.e. the images differ from each other.
    assert m["cider"] == pytest.approx(1000.0, rel=1e-6)


@needs_java
def test_caption_disjoint_prediction():
    refs = {k: [v] for k, v in PERFECT.items()}
    preds = {k: "zebra giraffe elephant" for k in PERFECT}
    m = caption_metrics(preds, refs, spice=False)
    for n in range(1, 5):
        assert m[f"bleu{n}"] == pytest.approx(0.0, abs=1e-6)
    assert m["cider"] == pytest.approx(0.0, abs=1e-9)
    assert m["rouge_l"] == pytest.approx(0.0, abs=1e-9)


@needs_java
def test_caption_input_forms_agree():
    refs = {"a": ["A dog on a mat.", "a brown dog"], "b": ["Two cats play!", "cats"]}
    preds = {"a": "a dog on the mat", "b": "two cats"}
    m_dict = caption_metrics(preds, refs, spice=False)
    m_records = caption_metrics([{"image_id": k, "caption": v} for k, v in preds.items()], refs, spice=False)
    m_lists = caption_metrics(list(preds.values()), list(refs.values()), spice=False)
    assert m_dict == m_records == m_lists


@needs_java
def test_ptb_tokenize_matches_pycocoevalcap():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = [
        "A man's surfboard (big) -- on a wave...",
        'Some "healthy" food; on a plate!',
        "",
        "Un café naïve, ½ 日本?",
        "dogs: running, jumping",
    ]
    with contextlib.redirect_stderr(io.StringIO()):
        ref = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert caption_mod.ptb_tokenize(captions) == [ref[i][0] for i in range(len(captions))]
    # a line break inside a caption cannot shift the following captions
    assert caption_mod.ptb_tokenize(["one\rtwo", "three"]) == ["one two", "three"]


@needs_java
def test_caption_metrics_equal_coco_eval_cap(monkeypatch):
    """The whole pipeline equals pycocoevalcap's COCOEvalCap (SPICE stubbed out: no CoreNLP jars offline) x 100."""
    import pycocoevalcap.eval as coco_eval
    from pycocotools.coco import COCO

    class NoSpice:
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"

    class SharedMeteor:  # pycocoevalcap's Meteor, through the JVM openblip keeps (saves one ~10 s start)
        def compute_score(self, gts, res):
            return caption_mod._meteor_score(gts, res), []

        def method(self):
            return "METEOR"

    monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    monkeypatch.setattr(coco_eval, "Meteor", SharedMeteor)
    refs = {
        11: ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave!", "a man's board on a wave"],
        22: ["Two dogs play with a frisbee in the park.", "A couple of dogs playing in a field.", "dogs, running"],
        33: ["A plate of food with broccoli and rice", 'Some "healthy" food on a plate.', "a dish with rice"],
        44: ["A red bus driving down a city street.", "The double-decker bus is red.", "a bus on the road"],
    }
    preds = {11: "a man riding a wave on a surfboard", 22: "two dogs playing with a frisbee", 33: "a plate of food"}
    preds[44] = "a red double decker bus on a street"
    coco = COCO()
    coco.dataset = {
        "images": [{"id": k} for k in refs],
        "annotations": [
            {"id": 100 * k + j, "image_id": k, "caption": c} for k, cs in refs.items() for j, c in enumerate(cs)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        coco.createIndex()
        result = coco.loadRes([{"image_id": k, "caption": v} for k, v in preds.items()])
        evaluator = coco_eval.COCOEvalCap(coco, result)
        evaluator.evaluate()
    names = {"Bleu_1": "bleu1", "Bleu_2": "bleu2", "Bleu_3": "bleu3", "Bleu_4": "bleu4"}
    names |= {"METEOR": "meteor", "ROUGE_L": "rouge_l", "CIDEr": "cider"}
    mine = caption_metrics(preds, refs, spice=False)
    for theirs, ours in names.items():
        assert mine[ours] == pytest.approx(100.0 * evaluator.eval[theirs], rel=1e-12, abs=1e-12), ours


@needs_java
def test_spice_skipped_with_one_line(monkeypatch, capsys):
    refs = {k: [v] for k, v in PERFECT.items()}
    monkeypatch.setattr(caption_mod, "spice_available", lambda: False)
    m = caption_metrics(PERFECT, refs)  # spice=None: "if available"
    err = capsys.readouterr().err.strip().splitlines()
    assert "spice" not in m and "cider" in m
    assert len(err) == 1 and "SPICE skipped" in err[0] and "spice=True" in err[0]

    caption_metrics(PERFECT, refs, spice=False)
    assert capsys.readouterr().err == ""

    # jars present but SPICE itself fails (e.g. an unsupported Java): still one line, other metrics returned
    def broken(gts, res):
        raise RuntimeError("SPICE (java) failed with exit status 1: InaccessibleObjectException")

    monkeypatch.setattr(caption_mod, "spice_available", lambda: True)
    monkeypatch.setattr(caption_mod, "_spice_score", broken)
    m = caption_metrics(PERFECT, refs)
    err = capsys.readouterr().err.strip().splitlines()
    assert "spice" not in m and len(err) == 1 and "InaccessibleObjectException" in err[0]
    with pytest.raises(RuntimeError, match="SPICE"):
        caption_metrics(PERFECT, refs, spice=True)

    # a reported SPICE value is scaled to percent like the rest
    monkeypatch.setattr(caption_mod, "_spice_score", lambda gts, res: 0.2379)
    assert caption_metrics(PERFECT, refs)["spice"] == pytest.approx(23.79)


def test_spice_download_failure_is_explained(monkeypatch):
    import pycocoevalcap.spice.get_stanford_models as gsm

    def offline():
        raise OSError("network is unreachable")

    monkeypatch.setattr(gsm, "get_stanford_models", offline)
    with pytest.raises(RuntimeError, match="stanford-corenlp-3.6.0-models.jar"):
        caption_mod._download_spice_models()


def test_spice_result_parsing():
    results = [
        {"image_id": 0, "scores": {"All": {"f": 0.5, "pr": 0.5, "re": 0.5}}},
        {"image_id": 1, "scores": {"All": {"f": 0.25, "pr": 0.5, "re": 0.2}}},
    ]
    assert caption_mod._spice_from_results(results) == pytest.approx(0.375)
    results.append({"image_id": 2, "scores": {"All": {"f": "NaN"}}})
    assert math.isnan(caption_mod._spice_from_results(results))
