"""Generate a tiny random-weight Qwen2 checkpoint that vLLM can serve offline.

No weights can be downloaded here, so tests build one at run time: a byte-level BPE
trained on local text plus a 2-layer Qwen2ForCausalLM. Its outputs are gibberish; it
exists to exercise the wiring (protocol, n-sampling, special tokens, pooling).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports stay lazy: importing this module must be cheap
    from transformers import PreTrainedTokenizerFast

# ChatML tokens (Qwen-style chat template, used by HyDE-style chat prompts).
EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# O1-Embedder tokens (see shared/docs/reference-methods.md).
QUERY_OPEN = "<query>"
QUERY_CLOSE = "</query>"
THOUGHT = "<thought>"
EMB = "<emb>"

CHATML_TOKENS = (EOS_TOKEN, IM_START, IM_END)
O1_TOKENS = (QUERY_OPEN, QUERY_CLOSE, THOUGHT, EMB)
SPECIAL_TOKENS = CHATML_TOKENS + O1_TOKENS

HIDDEN_SIZE = 128
MAX_POSITIONS = 1024
VOCAB_SIZE = 2000
# shared/ lies beside the checkout (also in CI).
DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "beir" / "scifact" / "corpus.jsonl"

# Qwen2-style ChatML template; add_generation_prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _default_corpus_text(max_chars: int = 400_000) -> str:
    """Read (never copy) local SciFact text if present, else synthesise some."""
    if DEFAULT_CORPUS.is_file():
        parts: list[str] = []
        size = 0
        with DEFAULT_CORPUS.open(encoding="utf-8") as fh:
            for line in fh:
                doc = json.loads(line)
                text = f"{doc.get('title', '')} {doc.get('text', '')}"
                parts.append(text)
                size += len(text)
                if size >= max_chars:
                    break
        return "\n".join(parts)
    rng = random.Random(0)
    words = (
        "the",
        "cell",
        "protein",
        "gene",
        "effect",
        "patients",
        "risk",
        "cancer",
        "what",
        "is",
        "how",
        "does",
        "why",
        "query",
        "thought",
        "search",
        "retrieval",
        "vector",
        "embedding",
    )
    return "\n".join(" ".join(rng.choice(words) for _ in range(30)) for _ in range(3000))


def _train_tokenizer(text: str, vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets only; no template processor, so nothing (no BOS) is prepended.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tok.train_from_iterator(lines, trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,  # Qwen2 convention: pad == <|endoftext|>
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START, IM_END, *O1_TOKENS],
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_POSITIONS,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: Path, corpus_text: str | None = None, seed: int = 0) -> Path:
    """Write tokenizer + random Qwen2ForCausalLM (float32, safetensors) to out_dir.

    Returns out_dir, loadable by transformers and by `vllm ... --model out_dir`.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(corpus_text or _default_corpus_text(), VOCAB_SIZE)
    # Pad the embedding table to a multiple of 64 (harmless, keeps kernels happy).
    vocab = ((len(tokenizer) + 63) // 64) * 64
    eos_id = int(tokenizer.convert_tokens_to_ids(EOS_TOKEN))  # type: ignore[arg-type]
    im_end_id = int(tokenizer.convert_tokens_to_ids(IM_END))  # type: ignore[arg-type]

    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim 32: the CPU attention backend needs >= 32
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        dtype="float32",
        use_sliding_window=False,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()  # float32: torch's default dtype
    model.generation_config = GenerationConfig(eos_token_id=[eos_id, im_end_id], pad_token_id=eos_id, bos_token_id=None)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":  # manual use: python -m tests.support.tinymodel /tmp/tiny
    import sys

    print(build_tiny_model(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-qwen2")))
