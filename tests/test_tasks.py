"""Task pipelines against brute-force restatements of the original inference code, on tiny random models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from openblip.losses import lm_loss
from openblip.models.blip import DEC_ID, ENC_ID
from openblip.tasks.features import FeatureExtractor
from openblip.tasks.nlvr import NLVR
from openblip.tasks.retrieval import Retriever
from openblip.tasks.tagging import Tagger, load_labels
from openblip.tasks.vqa import VQA, rank_answers
from openblip.text import pre_caption
from tests.helpers import random_images, save_layout, tiny_model

TEXTS = ["a dog on the beach", "a cat sitting on a mat", "two birds", "a red square left of a circle", "nothing"]


@pytest.fixture(scope="module")
def retriever():
    return Retriever(tiny_model("retrieval"))


def test_itc_features_are_normalised_and_reuse_cache(retriever):
    imgs = random_images(3)
    emb = retriever.image_embeds(imgs)
    a = retriever.image_features(imgs)
    b = retriever.image_features(image_embeds=emb)
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3), atol=1e-5)
    t = retriever.text_features(TEXTS)
    assert t.shape == (5, retriever.model.config.embed_dim)
    sims = retriever.similarity(a, t, scaled=True)
    assert torch.allclose(sims, (a @ t.T) / retriever.model.temp.detach(), atol=1e-6)


def _brute_itm(model, image_embed, ids, mask, first):
    ids = ids.clone()
    ids[:, 0] = first
    out = model.text_encoder(ids, attention_mask=mask, encoder_hidden_states=image_embed.expand(ids.shape[0], -1, -1))
    return model.itm_head(out.last_hidden_state[:, 0])


def test_rank_matches_original_evaluation(retriever):
    """Score = ITM logit[:, 1] + cosine on the ITC top-k, -100 elsewhere, in both directions."""
    imgs = random_images(4, seed=1)
    k = 3
    res = retriever.rank(imgs, TEXTS, k=k)
    m = retriever.model
    emb = retriever.image_embeds(imgs)
    ids, mask = retriever.tokenize(TEXTS)
    with torch.no_grad():
        for i in range(4):
            top_sim, top = res.cosine[i].topk(k)
            expect = torch.full((5,), -100.0)
            expect[top] = _brute_itm(m, emb[i : i + 1], ids[top], mask[top], ENC_ID)[:, 1] + top_sim
            assert torch.allclose(res.i2t[i], expect, atol=1e-5)
        for j in range(5):
            top_sim, top = res.cosine[:, j].topk(k)
            expect = torch.full((4,), -100.0)
            for slot, i in enumerate(top.tolist()):
                expect[i] = _brute_itm(m, emb[i : i + 1], ids[j : j + 1], mask[j : j + 1], ENC_ID)[0, 1] + top_sim[slot]
            assert torch.allclose(res.t2i[j], expect, atol=1e-5)
    assert sorted(res.i2t_ranking[0][:k]) == sorted(res.cosine[0].topk(k).indices.tolist())


def test_match_first_token_option(retriever):
    img = random_images(1)[0]
    enc = {r["text"]: r for r in retriever.match(img, TEXTS)}
    cls = {r["text"]: r for r in retriever.match(img, TEXTS, first_token="cls")}
    emb = retriever.image_embeds([img])
    ids, mask = retriever.tokenize(TEXTS)
    with torch.no_grad():
        want_enc = _brute_itm(retriever.model, emb, ids, mask, ENC_ID).softmax(-1)[:, 1]
        want_cls = _brute_itm(retriever.model, emb, ids, mask, 101).softmax(-1)[:, 1]
    for t, pe, pc in zip(TEXTS, want_enc, want_cls):
        assert enc[t]["itm_prob"] == pytest.approx(float(pe), abs=1e-5)
        assert cls[t]["itm_prob"] == pytest.approx(float(pc), abs=1e-5)
    probs = [r["itm_prob"] for r in retriever.match(img, TEXTS)]
    assert probs == sorted(probs, reverse=True)


def test_itm_pairs_and_errors(retriever):
    imgs = random_images(2)
    logits = retriever.itm(imgs, TEXTS[:2])
    assert logits.shape == (2, 2)
    with pytest.raises(ValueError, match="one to one"):
        retriever.itm(imgs, TEXTS[:3])
    with pytest.raises(TypeError, match="strings"):
        retriever.text_features(["ok", 3])


def test_tagging(retriever, tmp_path):
    tagger = Tagger(retriever.model)
    f = tmp_path / "labels.txt"
    f.write_text("# animals\ndog\ncat\n\nbird\ndog\n")
    assert load_labels(f) == ["dog", "cat", "bird"]
    tags = tagger.tag(random_images(2), f, top_k=2)
    assert len(tags) == 2 and all(len(t) == 2 for t in tags)
    for row in tags:
        assert [r["itm_prob"] for r in row] == sorted((r["itm_prob"] for r in row), reverse=True)
        assert all(0 <= r["itc_prob"] <= 1 for r in row)
    with pytest.raises(ValueError, match="empty"):
        load_labels(["", " "])


def test_vqa_rank_matches_original_rank_answer():
    model = tiny_model("vqa")
    vqa = VQA(model)
    answers = ["yes", "no", "2", "red", "a large blue square", "green"]
    imgs = random_images(3, seed=2)
    questions = ["is there a dog?", "how many objects are there?", "what color is the circle"]
    got = vqa.answer(imgs, questions, method="rank", answer_list=answers, k_test=4)
    # brute force: the original rank_answer with tiled question states
    with torch.no_grad():
        emb = model.encode_image(vqa.pixels(imgs))
        q_ids, q_mask = vqa.tokenize(questions)
        q = model.encode_question(emb, q_ids, q_mask)
        enc = vqa.tokenizer(answers, padding="longest")
        a_ids, a_mask = enc["input_ids"].clone(), enc["attention_mask"]
        a_ids[:, 0] = DEC_ID
        start = model.text_decoder(a_ids[:1, :1].expand(3, 1), encoder_hidden_states=q, encoder_attention_mask=q_mask)[
            0
        ]
        first = start[:, 0].softmax(-1)[:, a_ids[:, 1]]
        _, top = first.topk(4, dim=1)
        want = []
        for b in range(3):
            ids, mask = a_ids[top[b]], a_mask[top[b]]
            logits = model.text_decoder(
                ids,
                attention_mask=mask,
                encoder_hidden_states=q[b : b + 1].repeat(4, 1, 1),
                encoder_attention_mask=q_mask[b : b + 1].repeat(4, 1),
            )[0]
            score = -lm_loss(logits, ids.masked_fill(ids == 0, -100), 0.1, "none")
            want.append(answers[top[b][score.argmax()]])
    assert got == want
    with pytest.raises(ValueError, match="answer_list"):
        vqa.answer(imgs, questions, method="rank")
    with pytest.raises(ValueError, match="questions"):
        vqa.answer(imgs, questions[:2])
    scores, idx = rank_answers(model, q, q_mask, (a_ids, a_mask), k=100)  # k clamped to the list size
    assert idx.shape == (3,)


def test_nlvr_predict_matches_model():
    model = tiny_model("nlvr")
    task = NLVR(model)
    imgs = random_images(4, seed=3)
    preds = task.predict([(imgs[0], imgs[1]), (imgs[2], imgs[3])], ["The left image has a dog.", "both"])
    with torch.no_grad():
        px = task.pixels([imgs[0], imgs[2], imgs[1], imgs[3]])
        enc = task.tokenizer(["the left image has a dog", "both"], padding="longest")
        probs = F.softmax(model(px, enc["input_ids"], enc["attention_mask"]), -1)
    for p, row in zip(preds, probs):
        assert p.label == bool(row[1] > row[0])
        assert p.probability == pytest.approx(float(row.max()), abs=1e-6)
    with pytest.raises(ValueError, match="sentences"):
        task.predict([(imgs[0], imgs[1])], ["a", "b"])


def test_features(retriever):
    fx = FeatureExtractor(retriever.model)
    imgs = random_images(2)
    assert fx.image_tokens(imgs).shape == (2, 1 + 16, 32)
    assert torch.allclose(fx.image_embeddings(imgs), retriever.image_features(imgs), atol=1e-6)
    assert torch.allclose(fx.text_embeddings(TEXTS), retriever.text_features(TEXTS), atol=1e-6)
    tokens, mask = fx.multimodal_tokens(imgs, TEXTS[:2])
    assert tokens.shape[:2] == mask.shape
    feat_only = FeatureExtractor(tiny_model("feature"))
    with pytest.raises(TypeError, match="projections"):
        feat_only.image_embeddings(imgs)


def test_tasks_load_from_every_layout(tmp_path):
    model = tiny_model("retrieval")
    imgs = random_images(2)
    ref = Retriever(model).image_features(imgs)
    for layout in ("openblip", "hf", "official"):
        path = save_layout(model, tmp_path / layout, layout)
        got = Retriever(str(path)).image_features(imgs)
        assert torch.equal(got, ref), layout


def test_wrong_model_for_task():
    with pytest.raises(TypeError, match="retrieval"):
        Retriever(tiny_model("caption"))


# ---------------------------------------------------------------------------------------------------------------
# captioning and VQA generation through the task layer


@pytest.fixture(scope="module")
def captioner():
    from openblip.tasks.caption import Captioner

    return Captioner(tiny_model("caption"))


def test_caption_equals_direct_generation(captioner):
    from openblip.generation import generate

    imgs = random_images(3, seed=4)
    got = captioner.caption(imgs, num_beams=3, max_length=12, min_length=6)
    m = captioner.model
    with torch.no_grad():
        emb = m.encode_image(captioner.pixels(imgs))
        prompt = torch.tensor([[DEC_ID, 1037, 3861, 1997]])  # [DEC] a picture of
        assert torch.equal(captioner.prompt_ids("a picture of "), prompt)
        out = generate(m.text_decoder, prompt.expand(3, -1), emb, num_beams=3, max_length=12, min_length=6)
    want = [
        captioner.tokenizer.decode(s, skip_special_tokens=True)[len("a picture of ") :] for s in out.sequences.tolist()
    ]
    assert got == want
    # batched == one at a time
    assert [captioner.caption(im, num_beams=3, max_length=12, min_length=6)[0] for im in imgs] == got


def test_caption_options(captioner):
    img = random_images(1, seed=5)[0]
    three = captioner.caption(img, num_beams=3, num_captions=3, max_length=10)
    assert len(three) == 1 and len(three[0]) == 3
    a = captioner.caption([img, img], sample=True, seed=7, num_captions=2, max_length=10)
    b = captioner.caption([img, img], sample=True, seed=7, num_captions=2, max_length=10)
    assert a == b
    details = captioner.generate([img], max_new_tokens=5, min_length=1, num_beams=2)[0][0]
    assert len(details.token_ids) <= 4 + 5 and details.token_ids[0] == DEC_ID and details.score is not None
    with pytest.raises(ValueError, match="num_captions"):
        captioner.caption(img, num_beams=2, num_captions=3)


def test_caption_score_is_teacher_forced_logprob(captioner):
    img = random_images(1, seed=6)[0]
    rows = captioner.score(img, ["A dog.", "two cats on a mat"])
    m = captioner.model
    with torch.no_grad():
        for row, text in zip(rows, ["a picture of a dog", "a picture of two cats on a mat"]):
            enc = captioner.tokenizer([text])
            ids = enc["input_ids"]
            logits = m.decoder_logits(m.encode_image(captioner.pixels([img])), ids, enc["attention_mask"])
            lp = logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
            scored = lp[3:]  # positions predicting the caption words and [SEP]; the prompt is not scored
            assert row["num_tokens"] == scored.numel()
            assert row["mean_logprob"] == pytest.approx(float(scored.mean()), abs=1e-5)


def test_vqa_generate_matches_original_semantics():
    from openblip.generation import generate

    model = tiny_model("vqa")
    vqa = VQA(model)
    imgs = random_images(2, seed=8)
    qs = ["What color is the circle?", "how many objects are there in this picture?"]
    got = vqa.answer(imgs, qs, method="generate")
    with torch.no_grad():
        q_ids, q_mask = vqa.tokenize([q.lower().replace("?", "?") for q in qs])
        q = model.encode_question(model.encode_image(vqa.pixels(imgs)), q_ids, q_mask)
        bos = torch.full((2, 1), DEC_ID)
        # the original replaces the question mask by all ones for generation
        out = generate(model.text_decoder, bos, q, torch.ones_like(q_mask), num_beams=3, max_length=10, min_length=1)
    assert got == [vqa.tokenizer.decode(s, skip_special_tokens=True) for s in out.sequences.tolist()]


@pytest.mark.parametrize("dtype", ["bfloat16", "bfloat16-vision", "float16"])
def test_16_bit_dtype_warns_on_a_cpu_without_native_support(monkeypatch, dtype):
    """A CPU without AVX-512 BF16 / AMX emulates 16-bit matmuls ~100x slower than float32: asking for one there is
    a SlowPrecisionWarning naming the dtype; with native support, or for float32, nothing is said."""
    import warnings

    import openblip.checkpoint as ckpt

    support = {"native": False}
    monkeypatch.setattr(ckpt, "cpu_supports", lambda d: d == torch.float32 or support["native"])
    with pytest.warns(ckpt.SlowPrecisionWarning, match=dtype):
        ckpt.set_precision(tiny_model("caption", seed=1), dtype)
    support["native"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ckpt.set_precision(tiny_model("caption", seed=1), dtype)
        support["native"] = False
        ckpt.set_precision(tiny_model("caption", seed=1), "float32")
        ckpt.set_precision(tiny_model("caption", seed=1), None)


def test_vision_only_bfloat16_precision(tmp_path):
    """``dtype="bfloat16-vision"``: the ViT in bfloat16, everything else in float32, through the loading path a
    user takes; the text side gets float32 tokens, so the caption equals float32 decoding of the bf16 ViT's tokens,
    and ITM/ITC scores stay close to the float32 model's."""
    from openblip.api import load
    from openblip.checkpoint import set_precision
    from openblip.generation import generate
    from openblip.tasks.caption import Captioner

    tiny_model("caption", seed=2).save_pretrained(tmp_path / "cap")
    cap = Captioner(tmp_path / "cap", dtype="bfloat16-vision")
    m = cap.model
    assert m.dtype == torch.bfloat16 and m.text_dtype == torch.float32
    assert {p.dtype for n, p in m.named_parameters() if n.startswith("visual_encoder.")} == {torch.bfloat16}
    assert {p.dtype for n, p in m.named_parameters() if not n.startswith("visual_encoder.")} == {torch.float32}
    imgs = random_images(3, seed=6)
    pixels = cap.pixels(imgs)
    assert pixels.dtype == torch.bfloat16
    with torch.no_grad():
        emb = m.encode_image(pixels)
        vit = m.visual_encoder(pixels)
        assert emb.dtype == torch.float32 and torch.equal(emb, vit.float())
        fp32 = load(tmp_path / "cap")
        fp32.visual_encoder = m.visual_encoder  # the same bf16 ViT, float32 text side: the reference
        prompt = cap.prompt_ids("a picture of ").expand(3, -1)
        out = generate(fp32.text_decoder, prompt, emb, num_beams=3, max_length=12, min_length=6)
    want = [cap.tokenizer.decode(s, skip_special_tokens=True)[len("a picture of ") :] for s in out.sequences.tolist()]
    assert cap.caption(imgs, num_beams=3, max_length=12, min_length=6) == want

    ret32 = Retriever(tiny_model("retrieval", seed=3))
    ret16 = Retriever(set_precision(tiny_model("retrieval", seed=3), "bfloat16-vision"))
    texts = ["a dog on a sofa", "two red apples"]
    pairs = ["a dog on a sofa", "two red apples", "a dog on a sofa"]
    torch.testing.assert_close(ret16.itm(imgs, pairs), ret32.itm(imgs, pairs), atol=0.05, rtol=0)
    torch.testing.assert_close(ret16.image_features(imgs), ret32.image_features(imgs), atol=0.05, rtol=0)
    assert ret16.text_features(texts).dtype == torch.float32
    with pytest.raises(ValueError, match="bfloat16-vision"):
        load(tmp_path / "cap", dtype="bfloat16-text")


# ---------------------------------------------------------------------------------------------------------------
# loading, validation and edge cases


@pytest.mark.parametrize("layout", ["openblip", "official"])
def test_pretrain_checkpoint_runs_caption_retrieval_and_tagging(tmp_path, layout):
    """A pre-training checkpoint is loaded as what it is (the docs promise caption/retrieval "or pretrain");
    a task that cannot run on it still forces its own model and reports the keys that do not fit."""
    from openblip.checkpoint import CheckpointError
    from openblip.models.blip import BlipPretrain
    from openblip.tasks.caption import Captioner

    model = tiny_model("pretrain")
    path = str(save_layout(model, tmp_path, layout))
    imgs = random_images(2, seed=9)
    cap = Captioner(path)
    assert isinstance(cap.model, BlipPretrain)
    kw = dict(num_beams=2, max_length=10, min_length=5)
    assert cap.caption(imgs, **kw) == Captioner(model).caption(imgs, **kw)
    ret = Retriever(path)
    assert isinstance(ret.model, BlipPretrain)
    assert torch.equal(ret.image_features(imgs), Retriever(model).image_features(imgs))
    tags = Tagger(path).tag(imgs, ["dog", "cat"], top_k=2)
    assert [[t["label"] for t in row] for row in tags] == [
        [t["label"] for t in row] for row in Tagger(model).tag(imgs, ["dog", "cat"], top_k=2)
    ]
    with pytest.raises(CheckpointError, match="does not fit BlipVQA"):
        VQA(path)


def test_device_none_leaves_a_passed_model_and_a_given_device_moves_it(monkeypatch):
    import openblip.checkpoint

    moves = []
    monkeypatch.setattr(openblip.checkpoint, "set_precision", lambda m, dtype, device: moves.append(device) or m)
    model = tiny_model("retrieval")
    assert Retriever(model).model is model and moves == []  # not given: left where it is
    Retriever(model, device="cpu")  # given (even "cpu", the old default): moved there
    Retriever(model, device=torch.device("cpu"))
    assert moves == ["cpu", torch.device("cpu")]


def test_empty_inputs_give_empty_results(retriever):
    """No images / no texts: empty results of the usual shapes and types, never a torch.cat error."""
    img = random_images(1)[0]
    imgs = random_images(2)
    dim = retriever.model.config.embed_dim
    full = retriever.image_embeds(imgs)
    empty = retriever.image_embeds([])
    assert empty.shape == (0, *full.shape[1:]) and empty.dtype == full.dtype
    assert retriever.image_features([]).shape == (0, dim)
    assert retriever.text_features([]).shape == (0, dim)
    res = retriever.rank(imgs, [])
    assert res.cosine.shape == res.i2t.shape == (2, 0) and res.t2i.shape == (0, 2)
    assert res.i2t_ranking == [[], []] and res.t2i_ranking == []
    res = retriever.rank([], TEXTS)
    assert res.i2t.shape == (0, 5) and res.t2i.shape == (5, 0) and res.t2i_ranking == [[]] * 5
    assert retriever.match(img, []) == []
    assert retriever.itm([], []).shape == (0, 2)
    assert Tagger(retriever.model).tag([], ["dog"]) == []
    fx = FeatureExtractor(retriever.model)
    assert fx.image_tokens([]).shape == (0, *fx.image_tokens(imgs).shape[1:])
    tokens, mask = fx.text_tokens([])
    assert tokens.shape == (0, 0, retriever.model.config.text.hidden_size) and mask.shape == (0, 0)
    assert fx.image_embeddings([]).shape == fx.text_embeddings([]).shape == (0, dim)


def test_load_answer_list_requires_a_non_empty_list_of_strings(tmp_path):
    from openblip.tasks.vqa import load_answer_list

    good = tmp_path / "answers.json"
    good.write_text('["yes", "no", "2"]')
    assert load_answer_list(good) == ["yes", "no", "2"]
    (tmp_path / "answers.txt").write_text("yes\n\n no \n")
    assert load_answer_list(tmp_path / "answers.txt") == ["yes", "no"]
    cases = {
        "bad.json": ('["yes", "no"', "invalid JSON"),
        "empty.json": ("[]", "is empty"),
        "dict.json": ('{"yes": 1}', "list of strings, not an object"),
        "str.json": ('"yes"', "list of strings, not a string"),
        "num.json": ('["yes", 2]', "item 1 is a number"),
        "blank.txt": ("\n  \n", "is empty"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message) as err:
            load_answer_list(tmp_path / name)
        assert name in str(err.value)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8"):
        load_answer_list(tmp_path / "latin1.txt")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_answer_list(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        load_answer_list([])


def test_vqa_rank_validates_k_test_and_truncates_long_answers():
    vqa = VQA(tiny_model("vqa"))
    img = random_images(1)[0]
    with pytest.raises(ValueError, match="k_test must be >= 1"):
        vqa.answer(img, "what?", method="rank", answer_list=["yes", "no"], k_test=0)
    long_answer = ",".join(["x"] * 600)  # 1199 word pieces: beyond the 512 position embeddings
    ids, _ = vqa._answer_tokens(["yes", long_answer])
    assert ids.shape[1] == 512 and ids[1, -1] == 102  # cut to the decoder's positions, [SEP] kept
    assert vqa.answer(img, "what?", method="rank", answer_list=["yes", long_answer]) in (["yes"], [long_answer])


def test_nlvr_truncates_sentences_to_the_position_embeddings():
    model = tiny_model("nlvr")
    task = NLVR(model)
    a, b = random_images(2, seed=3)
    sentence = " ".join([",".join(["x"] * 20)] * 40)  # 40 words after pre_caption, ~1560 word pieces
    (pred,) = task.predict([(a, b)], [sentence])
    with torch.no_grad():
        enc = task.tokenizer([pre_caption(sentence, 40)], truncation=True, max_length=512)
        probs = F.softmax(model(task.pixels([a, b]), enc["input_ids"], enc["attention_mask"]), -1)[0]
    assert pred.label == bool(probs[1] > probs[0])
    assert pred.probability == pytest.approx(float(probs.max()), abs=1e-6)


def test_tagging_scores_the_same_cleaned_text_with_itc_and_itm(retriever):
    """Tagging's ITC and ITM both see ``pre_caption(template.format(label))``: its scores equal :meth:`match`'s
    for those texts (labels with capitals and punctuation, which ``lower()`` alone would keep)."""
    img = random_images(1, seed=11)[0]
    labels = ["T-Shirt (red)", "Mr. Smith's car", "A DOG!"]
    tags = {t["label"]: t for t in Tagger(retriever.model).tag(img, labels, top_k=3)[0]}
    matched = {r["text"]: r for r in retriever.match(img, [f"a picture of {lb}" for lb in labels])}
    for lb in labels:
        want = matched[f"a picture of {lb}"]
        assert tags[lb]["itm_prob"] == pytest.approx(want["itm_prob"], abs=1e-5)
        assert tags[lb]["itc_cosine"] == pytest.approx(want["itc_cosine"], abs=1e-5)


def test_tag_template_and_label_file_validation(retriever, tmp_path):
    tagger = Tagger(retriever.model)
    img = random_images(1)[0]
    with pytest.raises(ValueError, match="invalid template 'photo of {label}'"):
        tagger.tag(img, ["dog"], template="photo of {label}")
    from openblip.tasks.tagging import check_template

    assert check_template("a photo of a {}.") == "a photo of a {}."
    for bad in ("{0} and {1}", "{:d}"):
        with pytest.raises(ValueError, match="invalid template"):
            check_template(bad)
    with pytest.raises(ValueError, match="has no {}"):
        check_template("a photo")
    for name, text, message in (
        ("five.json", "5", "not a number"),
        ("dog.json", '"dog"', "not a string"),
        ("mixed.json", '["dog", null]', "item 1 is null"),
        ("broken.json", "[", "invalid JSON"),
        ("comments.txt", "# only a comment\n", "empty in label file"),
    ):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message) as err:
            load_labels(tmp_path / name)
        assert name in str(err.value)
    (tmp_path / "ok.json").write_text('[" dog ", "cat", "dog"]')
    assert load_labels(tmp_path / "ok.json") == ["dog", "cat"]
    with pytest.raises(IsADirectoryError):
        load_labels(tmp_path)
