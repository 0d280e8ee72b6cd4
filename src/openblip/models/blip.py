"""BLIP task models: tensors in, tensors out (Li et al., BLIP, ICML 2022, arXiv:2201.12086).

One class per released task, each with the module names of the corresponding salesforce/BLIP class so that
official checkpoints load as an identity map:

==================  ============================  ===========================================================
task                original class                modules
==================  ============================  ===========================================================
``caption``         ``BLIP_Decoder``              visual_encoder, text_decoder
``retrieval/itm``   ``BLIP_Retrieval``/``BLIP_ITM`` visual_encoder, text_encoder, vision_proj, text_proj,
                                                  itm_head, temp
``vqa``             ``BLIP_VQA``                  visual_encoder, text_encoder (question), text_decoder
                                                  (answers; cross-attends to the question states)
``nlvr``            ``BLIP_NLVR``                 visual_encoder, text_encoder (two cross-attentions), cls_head
``feature``         ``BLIP_Base``                 visual_encoder, text_encoder
``pretrain``        ``BLIP_Pretrain``             retrieval modules + text_decoder sharing all but
                                                  self-attention with text_encoder
==================  ============================  ===========================================================

Momentum encoders and feature queues are training state: they live in the training wrapper, not here.

First tokens (spec §1.3): the unimodal text encoder keeps ``[CLS]``; the image-grounded encoder uses
``[ENC]``; the decoder uses ``[DEC]``. Methods that need a particular first token write it themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from openblip.config import BlipConfig
from openblip.layers.linear import Linear
from openblip.losses import lm_loss
from openblip.models.text import BertLMHeadModel, BertModel
from openblip.models.vision import VisionTransformer

PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
DEC_ID, ENC_ID = 30522, 30523

_FIRST_TOKENS = {"enc": ENC_ID, "cls": CLS_ID, "dec": DEC_ID}


def with_first_token(input_ids: torch.Tensor, token: str | int | None) -> torch.Tensor:
    """A copy of ``input_ids`` whose first column is ``token`` (``"enc"``, ``"cls"``, ``"dec"`` or an id).

    ``None`` keeps the ids as they are.
    """
    if token is None:
        return input_ids
    token_id = _FIRST_TOKENS[token] if isinstance(token, str) else int(token)
    ids = input_ids.clone()
    ids[:, 0] = token_id
    return ids


class BlipBase(nn.Module):
    """Shared plumbing: config, device/dtype, the image encoder, saving/loading."""

    task: str = ""

    def __init__(self, config: BlipConfig) -> None:
        super().__init__()
        self.config = config
        self.visual_encoder = VisionTransformer(config.vision)

    @property
    def device(self) -> torch.device:
        return self.visual_encoder.pos_embed.device

    @property
    def dtype(self) -> torch.dtype:
        """The image encoder's dtype (the dtype of the pixels it takes)."""
        return self.visual_encoder.pos_embed.dtype

    @property
    def text_dtype(self) -> torch.dtype:
        """The dtype of everything after the image encoder (float32 under a ``"bfloat16-vision"`` precision,
        otherwise :attr:`dtype`)."""
        for name, p in self.named_parameters():
            if not name.startswith("visual_encoder.") and p.is_floating_point():
                return p.dtype
        return self.dtype

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    def encode_image(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """ViT tokens ``[B, 1 + N, D]`` of preprocessed images ``[B, 3, S, S]``, in :attr:`text_dtype`."""
        x = self.visual_encoder(pixel_values.to(self.device), interpolate_pos_encoding=interpolate_pos_encoding)
        return x.to(self.text_dtype)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (openblip format) into directory ``path``."""
        from openblip.checkpoint import save_pretrained

        return save_pretrained(self, path)

    @classmethod
    def from_pretrained(cls, path: str, **kwargs):  # noqa: ANN206
        """Load a model saved by :meth:`save_pretrained` (or any layout :func:`openblip.load` reads)."""
        from openblip.checkpoint import load_model

        model = load_model(path, **kwargs)
        if cls is not BlipBase and not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__} ({model.task}), not a {cls.__name__}")
        return model


class BlipCaption(BlipBase):
    """Image captioning: ViT + image-grounded decoder (``BLIP_Decoder``)."""

    task = "caption"

    def __init__(self, config: BlipConfig) -> None:
        super().__init__(config)
        self.text_decoder = BertLMHeadModel(config.text, encoder_width=config.vision.width)

    def decoder_logits(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """LM logits ``[B, L, V]`` for ``input_ids`` (first token replaced by ``[DEC]``) given image tokens."""
        logits, _ = self.text_decoder(
            with_first_token(input_ids, "dec"), attention_mask=attention_mask, encoder_hidden_states=image_embeds
        )
        return logits

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.decoder_logits(self.encode_image(pixel_values), input_ids, attention_mask)

    def loss(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prompt_length: int = 4,
        label_smoothing: float = 0.1,
    ) -> torch.Tensor:
        """The captioning LM loss: pads and the first ``prompt_length`` positions ([DEC] + prompt) unsupervised."""
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, :prompt_length] = -100
        return lm_loss(self(pixel_values, input_ids, attention_mask), labels, label_smoothing)


class BlipRetrieval(BlipBase):
    """Image-text retrieval and matching: ITC projections + ITM head (``BLIP_Retrieval`` / ``BLIP_ITM``)."""

    task = "retrieval"

    def __init__(self, config: BlipConfig) -> None:
        super().__init__(config)
        width = config.text.hidden_size
        self.text_encoder = BertModel(config.text, encoder_width=config.vision.width)
        self.vision_proj = Linear(config.vision.width, config.embed_dim)
        self.text_proj = Linear(width, config.embed_dim)
        self.itm_head = Linear(width, 2)
        self.temp = nn.Parameter(torch.tensor(config.temp))
        for m in (self.vision_proj, self.text_proj, self.itm_head):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def image_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """L2-normalised ``[B, embed_dim]`` ITC image features from ViT tokens."""
        return F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)

    def text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unimodal text-encoder tokens ``[B, L, 768]`` (``[CLS]`` first, no cross-attention)."""
        ids = with_first_token(input_ids, "cls")
        return self.text_encoder(ids, attention_mask=attention_mask, mode="text").last_hidden_state

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised ``[B, embed_dim]`` ITC text features."""
        return F.normalize(self.text_proj(self.text_embeds(input_ids, attention_mask)[:, 0]), dim=-1)

    def multimodal_embeds(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        first_token: str | None = "enc",
        cross_kv: list | None = None,
    ) -> torch.Tensor:
        """Image-grounded text-encoder tokens. ``image_embeds`` may have ``B / r`` rows for ``B`` texts."""
        ids = with_first_token(input_ids, first_token)
        out = self.text_encoder(
            ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds, cross_kv=cross_kv
        )
        return out.last_hidden_state

    def itm_logits(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        first_token: str | None = "enc",
        cross_kv: list | None = None,
    ) -> torch.Tensor:
        """ITM logits ``[B, 2]`` (index 1 = match).

        ``first_token="enc"`` is what training used and our default. The original ``BLIP_ITM`` demo class
        and transformers' ``BlipForImageTextRetrieval`` keep ``[CLS]``: pass ``first_token="cls"`` to
        reproduce them (spec §1.6, §10).
        """
        h = self.multimodal_embeds(image_embeds, input_ids, attention_mask, first_token, cross_kv)
        return self.itm_head(h[:, 0])

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image features, text features, ITM logits) for aligned image/text pairs."""
        image_embeds = self.encode_image(pixel_values)
        return (
            self.image_features(image_embeds),
            self.text_features(input_ids, attention_mask),
            self.itm_logits(image_embeds, input_ids, attention_mask),
        )


class BlipVQA(BlipBase):
    """Visual question answering: question encoder + answer decoder (``BLIP_VQA``)."""

    task = "vqa"

    def __init__(self, config: BlipConfig) -> None:
        super().__init__(config)
        self.text_encoder = BertModel(config.text, encoder_width=config.vision.width)
        # the answer decoder cross-attends to the question states, so its K/V width is the text width
        self.text_decoder = BertLMHeadModel(config.text, encoder_width=config.text.hidden_size)

    def encode_question(
        self,
        image_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        first_token: str | None = "enc",
    ) -> torch.Tensor:
        """Question states ``[B, Lq, 768]`` from the image-grounded encoder (``[ENC]`` first)."""
        ids = with_first_token(input_ids, first_token)
        out = self.text_encoder(ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds)
        return out.last_hidden_state

    def answer_logits(
        self,
        question_states: torch.Tensor,
        question_mask: torch.Tensor | None,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Answer-decoder LM logits ``[B, La, V]`` (answers start with ``[DEC]``)."""
        logits, _ = self.text_decoder(
            with_first_token(answer_ids, "dec"),
            attention_mask=answer_mask,
            encoder_hidden_states=question_states,
            encoder_attention_mask=question_mask,
        )
        return logits

    def forward(
        self,
        pixel_values: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Answer logits for one answer per question."""
        q = self.encode_question(self.encode_image(pixel_values), question_ids, question_mask)
        return self.answer_logits(q, question_mask, answer_ids, answer_mask)


class BlipNLVR(BlipBase):
    """NLVR2: one sentence, two images; two cross-attentions per text layer (``BLIP_NLVR``)."""

    task = "nlvr"

    def __init__(self, config: BlipConfig) -> None:
        super().__init__(config)
        width = config.text.hidden_size
        self.text_encoder = BertModel(
            config.text,
            encoder_width=config.vision.width,
            twin_cross_attention=True,
            merge_from_layer=config.nlvr_merge_from_layer,
        )
        self.cls_head = nn.Sequential(Linear(width, width), nn.ReLU(), Linear(width, 2))

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, 2]`` (index 1 = True) for ``pixel_values = cat([images0, images1])`` of ``[2B, 3, S, S]``.

        Both images go through the ViT as one batch, as in the original.
        """
        b = input_ids.shape[0]
        if pixel_values.shape[0] != 2 * b:
            raise ValueError(f"NLVR2 needs 2 images per sentence: got {pixel_values.shape[0]} images, {b} sentences")
        image_embeds = self.encode_image(pixel_values)
        img0, img1 = image_embeds[:b], image_embeds[b:]
        out = self.text_encoder(
            with_first_token(input_ids, "enc"), attention_mask=attention_mask, encoder_hidden_states=[img0, img1]
        )
        return self.cls_head(out.last_hidden_state[:, 0])


class BlipFeatureExtractor(BlipBase):
    """Unprojected features (``BLIP_Base``): image tokens, text tokens, multimodal tokens."""

    task = "feature"

    def __init__(self, config: BlipConfig) -> None:
        super().__init__(config)
        self.text_encoder = BertModel(config.text, encoder_width=config.vision.width)

    def text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        ids = with_first_token(input_ids, "cls")
        return self.text_encoder(ids, attention_mask=attention_mask, mode="text").last_hidden_state

    def multimodal_embeds(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        ids = with_first_token(input_ids, "enc")
        return self.text_encoder(
            ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds
        ).last_hidden_state

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.multimodal_embeds(self.encode_image(pixel_values), input_ids, attention_mask)


class BlipPretrain(BlipRetrieval):
    """Pre-training model: ITC/ITM modules + an LM decoder sharing all but self-attention (``BLIP_Pretrain``).

    Shared between ``text_encoder`` and ``text_decoder.bert``: embeddings, every layer's cross-attention and FFN.
    Not shared: self-attention (``attention.*``). The LM head is decoder-only, tied to the shared word
    embeddings. A state dict therefore holds the shared tensors under both prefixes, like the official file.
    """

    task = "pretrain"

    def __init__(self, config: BlipConfig) -> None:
        super().__init__(config)
        self.text_decoder = BertLMHeadModel(config.text, encoder_width=config.vision.width)
        tie_encoder_decoder(self.text_encoder, self.text_decoder.bert)
        self.text_decoder.tie_weights()

    def decoder_logits(
        self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits, _ = self.text_decoder(
            with_first_token(input_ids, "dec"), attention_mask=attention_mask, encoder_hidden_states=image_embeds
        )
        return logits


def tie_encoder_decoder(encoder: BertModel, decoder: BertModel) -> None:
    """Share every decoder module with the encoder except self-attention (``tie_encoder_decoder_weights``)."""
    decoder.embeddings = encoder.embeddings
    for enc_layer, dec_layer in zip(encoder.encoder.layer, decoder.encoder.layer):
        dec_layer.crossattention = enc_layer.crossattention
        dec_layer.intermediate = enc_layer.intermediate
        dec_layer.output = enc_layer.output


MODEL_CLASSES: dict[str, type[BlipBase]] = {
    "caption": BlipCaption,
    "retrieval": BlipRetrieval,
    "itm": BlipRetrieval,
    "vqa": BlipVQA,
    "nlvr": BlipNLVR,
    "feature": BlipFeatureExtractor,
    "pretrain": BlipPretrain,
}


def create_model(config: BlipConfig) -> BlipBase:
    """Build the (randomly initialised) task model for ``config.task``."""
    return MODEL_CLASSES[config.task](config)
