"""A tiny random-weight causal LM with a real BPE tokenizer and chat template, built locally in about a second.

Tests and smoke runs use it (`model: tiny` in `conf/llm/tiny.yaml`) so the whole LLM path (tokenizer, chat
template, batching, padding, adapters, caching) runs for real with no download. Its outputs are
meaningless token soup, but deterministic: the tokenizer is trained on a fixed corpus and the weights are
drawn from a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

#: bump when the build below changes, so cached copies under `<cache_dir>/models/tiny-<version>` are rebuilt
TINY_VERSION = "v1"

_CORPUS = [
    "SELECT name FROM singer WHERE age > 30;",
    "SELECT count(*) FROM concert;",
    "SELECT T1.name, T2.title FROM singer AS T1 JOIN song AS T2 ON T1.id = T2.singer_id;",
    "SELECT country, avg(age) FROM singer GROUP BY country ORDER BY avg(age) DESC LIMIT 3;",
    "SELECT DISTINCT city FROM stadium WHERE capacity BETWEEN 5000 AND 10000;",
    "SELECT max(capacity), min(capacity) FROM stadium;",
    "SELECT name FROM employee WHERE salary > (SELECT avg(salary) FROM employee);",
    "SELECT title FROM course EXCEPT SELECT title FROM course WHERE credits = 4;",
    "CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, country TEXT);",
    "Question: How many singers are there? Answer with one SQL query.",
    "Question: What are the names of stadiums with capacity over 5000?",
    "You are a helpful assistant that writes SQLite queries for the given schema.",
]

_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_SPECIAL = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, hidden_size: int = 96) -> Path:
    """Write a tiny Llama checkpoint (~200K parameters) and its tokenizer to `out_dir`; return the path.

    The tokenizer is a byte-level BPE (vocabulary 512) trained on a dozen SQL lines, with `<s>`/`</s>`/`<pad>`
    and a chat template (`<|role|>\\ncontent</s>`). The model is a 2-layer `LlamaConfig` (hidden 96,
    grouped-query attention, tied embeddings) initialised from `seed` with a wide initializer so greedy
    outputs vary with the prompt. Same seed, same files (for a given torch version). `hidden_size` 128 (the
    named model `tiny-128`) gives layers whose input sizes are multiples of 64, as bitsandbytes' 4-bit layers
    (QLoRA) need; the intermediate size is twice the hidden size.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
        model_max_length=512,
    )
    tokenizer.chat_template = _CHAT_TEMPLATE
    tokenizer.save_pretrained(str(out))

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.3,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(str(out))
    return out
