"""Image captioning: PIL images / paths / bytes / tensors in, strings out.

Reproduces ``BLIP_Decoder.generate`` (salesforce/BLIP ``models/blip.py``): the decoder starts from the tokenized
prompt (``[DEC] a picture of``, no ``[SEP]``); ``max_length``/``min_length`` count those prompt tokens; the decoded
text has its first ``len(prompt)`` characters removed. Defaults are the COCO evaluation settings (beam 3,
max 20, min 5). Nucleus sampling in the original silently used top-k 50 and repetition penalty 1.1; here they
are explicit arguments with those defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from openblip.models.blip import DEC_ID, BlipCaption, BlipPretrain
from openblip.tasks._common import TaskBase, as_list, chunks
from openblip.tokenizer import BlipTokenizer, get_tokenizer


@dataclass
class Caption:
    """One generated caption with its token ids (prompt included) and score (beam: length-normalised)."""

    text: str
    token_ids: list[int]
    score: float | None


class Captioner(TaskBase):
    """Caption images with a BLIP captioning model.

    Example:
        >>> cap = Captioner("blip-base-caption-coco")  # doctest: +SKIP
        >>> cap.caption("photo.jpg")                    # doctest: +SKIP
        ['a woman sitting on the beach with her dog']
    """

    task = "caption"
    model_types = (BlipCaption, BlipPretrain)

    def __init__(self, model: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if not isinstance(self.model, self.model_types):
            raise TypeError(f"captioning needs a caption (or pretrain) model, got {type(self.model).__name__}")

    def prompt_ids(self, prompt: str) -> torch.Tensor:
        """``[1, P]``: the tokenized prompt with ``[DEC]`` first and its ``[SEP]`` dropped (as the original)."""
        ids = self.tokenizer([prompt], padding=False, return_tensors="pt")["input_ids"][:, :-1].clone()
        ids[:, 0] = DEC_ID
        return ids.to(self.device)

    @torch.inference_mode()
    def generate(
        self,
        images: Any,
        *,
        num_beams: int = 3,
        max_length: int = 20,
        min_length: int = 5,
        max_new_tokens: int | None = None,
        repetition_penalty: float | None = None,
        sample: bool = False,
        top_p: float = 0.9,
        top_k: int = 50,
        temperature: float = 1.0,
        prompt: str | None = None,
        num_captions: int = 1,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> list[list[Caption]]:
        """Generate ``num_captions`` captions per image (see :meth:`caption` for the arguments)."""
        prompt = self.model.config.prompt if prompt is None else prompt
        if repetition_penalty is None:
            repetition_penalty = 1.1 if sample else 1.0
        beams = 1 if sample else num_beams
        check_caption_args(
            prompt,
            tokenizer=self.tokenizer,
            max_positions=self.model.config.text.max_position_embeddings,
            num_beams=num_beams,
            max_length=max_length,
            max_new_tokens=max_new_tokens,
            repetition_penalty=repetition_penalty,
            sample=sample,
            temperature=temperature,
            num_captions=num_captions,
        )
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        prompt_ids = self.prompt_ids(prompt)
        results: list[list[Caption]] = []
        for batch in chunks(as_list(images), batch_size or self.batch_size):
            image_embeds = self.model.encode_image(self.pixels(batch))
            ids = prompt_ids.expand(len(batch), -1)
            from openblip.generation import generate

            out = generate(
                self.model.text_decoder,
                ids,
                image_embeds,
                num_beams=beams,
                max_length=max_length,
                min_length=min_length,
                max_new_tokens=max_new_tokens,
                sample=sample,
                top_p=top_p,
                top_k=top_k,
                temperature=temperature,
                repetition_penalty=repetition_penalty,
                num_return_sequences=num_captions,
                generator=generator,
                output_scores=True,
            )
            seqs = out.sequences.tolist()
            scores = out.scores.tolist() if out.scores is not None else [None] * len(seqs)
            for i in range(len(batch)):
                row = []
                for j in range(num_captions):
                    k = i * num_captions + j
                    text = self.tokenizer.decode(seqs[k], skip_special_tokens=True)[len(prompt) :]
                    row.append(Caption(text, _trim(seqs[k]), scores[k]))
                results.append(row)
        return results

    @torch.inference_mode()
    def score(
        self, images: Any, captions: Any, *, prompt: str | None = None, batch_size: int | None = None
    ) -> list[dict]:
        """Caption confidence: how likely the decoder finds ``captions[i]`` for ``images[i]``.

        Teacher-forced over ``prompt + pre_caption(caption, 30)`` as in training; the prompt tokens are not
        scored. Returns per pair ``{"caption", "mean_logprob", "sum_logprob", "num_tokens", "perplexity"}``
        (log-probs without label smoothing; ``[SEP]`` included as in the training loss).
        """
        from openblip.text import pre_caption

        prompt = self.model.config.prompt if prompt is None else prompt
        imgs, caps = as_list(images), as_list(captions)
        if len(imgs) == 1 and len(caps) > 1:
            imgs = imgs * len(caps)
        if len(imgs) != len(caps):
            raise ValueError(f"got {len(imgs)} images but {len(caps)} captions")
        prompt_len = self.prompt_ids(prompt).shape[1]
        out = []
        for batch in chunks(list(zip(imgs, caps)), batch_size or self.batch_size):
            embeds = self.model.encode_image(self.pixels([b[0] for b in batch]))
            texts = [prompt + pre_caption(b[1], 30) for b in batch]
            enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=40)
            ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
            logits = self.model.decoder_logits(embeds, ids, mask).float()
            logp = logits[:, :-1].log_softmax(-1).gather(2, ids[:, 1:, None])[..., 0]
            keep = mask[:, 1:].bool()
            keep[:, : prompt_len - 1] = False
            for (_, cap), lp, kp in zip(batch, logp, keep):
                n = int(kp.sum())
                total = float(lp[kp].sum())
                mean = total / max(n, 1)
                out.append(
                    {
                        "caption": cap,
                        "mean_logprob": mean,
                        "sum_logprob": total,
                        "num_tokens": n,
                        "perplexity": float(torch.tensor(-mean).exp()),
                    }
                )
        return out

    def caption(
        self,
        images: Any,
        *,
        num_beams: int = 3,
        max_length: int = 20,
        min_length: int = 5,
        max_new_tokens: int | None = None,
        repetition_penalty: float | None = None,
        sample: bool = False,
        top_p: float = 0.9,
        top_k: int = 50,
        temperature: float = 1.0,
        prompt: str | None = None,
        num_captions: int = 1,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> list[str] | list[list[str]]:
        """Caption one image or a list of images.

        Args:
            images: paths, bytes, PIL images, numpy arrays, or preprocessed ``[B, 3, S, S]`` tensors.
            num_beams: beam width (ignored when ``sample``).
            max_length: maximum total length **including the prompt tokens** (original semantics); it must
                exceed the prompt length and stay within the text model's positions (512).
            min_length: minimum total length including the prompt; ``[SEP]`` is banned before it.
            max_new_tokens: friendlier alternative to ``max_length``: tokens after the prompt.
            repetition_penalty: default 1.0 for beam search and 1.1 for sampling (the original's hidden value).
            sample: nucleus sampling instead of beam search.
            top_p, top_k, temperature: sampling warpers (original: 0.9, 50, 1.0).
            prompt: text the caption starts with; default ``"a picture of "`` (removed from the output).
            num_captions: captions per image (≤ ``num_beams`` for beam search).
            seed: seed for sampling, for reproducible captions.
            batch_size: images per forward pass.

        Returns:
            One string per image (a one-element list for a single image), or a list of ``num_captions``
            strings per image when ``num_captions > 1``; ``[]`` for no images.

        Raises:
            ValueError: for settings that cannot generate (see :func:`check_caption_args`), before any image
                is processed.
        """
        out = self.generate(
            images,
            num_beams=num_beams,
            max_length=max_length,
            min_length=min_length,
            max_new_tokens=max_new_tokens,
            repetition_penalty=repetition_penalty,
            sample=sample,
            top_p=top_p,
            top_k=top_k,
            temperature=temperature,
            prompt=prompt,
            num_captions=num_captions,
            seed=seed,
            batch_size=batch_size,
        )
        texts = [[c.text for c in row] for row in out]
        return [row[0] for row in texts] if num_captions == 1 else texts


def check_caption_args(
    prompt: str,
    *,
    tokenizer: BlipTokenizer | None = None,
    max_positions: int | None = None,
    num_beams: int = 3,
    max_length: int = 20,
    max_new_tokens: int | None = None,
    repetition_penalty: float | None = None,
    sample: bool = False,
    temperature: float = 1.0,
    num_captions: int = 1,
) -> None:
    """Raise :class:`ValueError` for caption settings that cannot generate; needs no model.

    Checks what :meth:`Captioner.generate` would refuse: ``num_captions`` above the beam width, a
    ``max_length`` not longer than the tokenized ``prompt`` (``[DEC]`` included) or beyond ``max_positions``
    (the text model's ``max_position_embeddings``, when given), a repetition penalty or temperature <= 0.
    """
    from openblip.generation import check_generation_args

    beams = 1 if sample else num_beams
    if num_captions < 1:
        raise ValueError(f"num_captions must be >= 1, got {num_captions}")
    if not sample and num_captions > beams:
        raise ValueError(f"num_captions ({num_captions}) cannot exceed num_beams ({beams}) in beam search")
    tokenizer = tokenizer or get_tokenizer()
    prompt_length = len(tokenizer([prompt], padding=False, return_tensors=None)["input_ids"][0]) - 1  # no [SEP]
    check_generation_args(
        prompt_length,
        num_beams=beams,
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        sample=sample,
        temperature=temperature,
        repetition_penalty=(1.1 if sample else 1.0) if repetition_penalty is None else repetition_penalty,
        num_return_sequences=num_captions,
        max_positions=max_positions,
    )


def _trim(ids: list[int]) -> list[int]:
    """Drop trailing padding after ``[SEP]``."""
    if 102 in ids:
        return ids[: ids.index(102) + 1]
    while ids and ids[-1] == 0:
        ids = ids[:-1]
    return ids


def caption(images: Any, model: Any = "blip-base-caption-coco", **kwargs: Any) -> list[str] | list[list[str]]:
    """One-call captioning: ``openblip.caption("photo.jpg")``."""
    gen_args = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("device", "dtype", "batch_size")}
    return Captioner(model if not isinstance(model, Path) else str(model), **kwargs).caption(images, **gen_args)
