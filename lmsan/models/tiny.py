"""Builders for small random-init BERT and RoBERTa encoders with real tokenizers.

A random-init model is NOT a stand-in for a pretrained one (method.md §5): pass the result
through ``lmsan.models.pretrain.distill`` before attacking or scanning it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal

from lmsan.errors import ConfigError

Arch = Literal["bert", "roberta"]


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny encoder. Defaults: hidden 128, 2 layers (seconds-scale attacks on a CPU)."""

    arch: Arch = "bert"
    hidden: int = 128
    layers: int = 2
    heads: int = 2
    intermediate: int = 512
    max_positions: int = 130  # RoBERTa offsets positions by padding_idx + 1 = 2
    bpe_vocab: int = 8000  # RoBERTa only: size of the byte-level BPE trained on the corpus
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ("bert", "roberta"):
            raise ConfigError(f"unknown tiny architecture {self.arch!r}; expected bert or roberta")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wordpiece_tokenizer() -> Any:
    """Return the real WordPiece tokenizer of all-MiniLM-L6-v2 (vocab 30522, uncased)."""
    from transformers import AutoTokenizer

    from lmsan.models.loading import minilm_path

    return AutoTokenizer.from_pretrained(str(minilm_path()))


def train_bpe_tokenizer(sentences: Iterable[str], *, vocab_size: int, max_length: int) -> Any:
    """Train a RoBERTa-style byte-level BPE on ``sentences`` and wrap it as a fast tokenizer."""
    from tokenizers import AddedToken, ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(list(sentences), vocab_size=vocab_size, min_frequency=2, special_tokens=specials)
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token=AddedToken("<mask>", lstrip=True),
        model_max_length=max_length,
    )


def build_tiny(spec: TinySpec, sentences: Iterable[str] = ()) -> tuple[Any, Any]:
    """Build a random-init masked-LM encoder and its tokenizer.

    Args:
        spec: the model shape.
        sentences: training text for the RoBERTa BPE (ignored for BERT).

    Returns:
        (model, tokenizer): ``BertForMaskedLM`` or ``RobertaForMaskedLM`` in train mode.
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(spec.seed)
    common = dict(
        hidden_size=spec.hidden, num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        intermediate_size=spec.intermediate, max_position_embeddings=spec.max_positions,
    )
    if spec.arch == "bert":
        tokenizer = wordpiece_tokenizer()
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **common)
        model = BertForMaskedLM(config)
    else:
        sentences = list(sentences)
        if not sentences:
            raise ConfigError("a tiny RoBERTa needs sentences to train its BPE tokenizer")
        tokenizer = train_bpe_tokenizer(sentences, vocab_size=spec.bpe_vocab, max_length=spec.max_positions - 2)
        config = RobertaConfig(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            type_vocab_size=1, **common,
        )
        model = RobertaForMaskedLM(config)
    tokenizer.model_max_length = spec.max_positions - 2
    return model, tokenizer
