"""Small real checkpoints for tests, benchmarks and demos (imports torch and transformers when called).

No weights can be downloaded here, so models are built from configs with random (or briefly trained)
weights and saved with transformers' own save_pretrained: real loading code on real files. The text
is CPython's bundled help (pydoc_data.topics: about 465 kB of English prose and code), which every
Python installation carries, so calibration and held-out text need no network either.
"""

from __future__ import annotations

from pathlib import Path

TINY_LLAMA = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512, max_position_embeddings=512, rms_norm_eps=1e-5)


def help_text_documents() -> list[str]:
    """CPython's help topics, one document per paragraph."""
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        docs += [p.strip() for p in topics[key].split("\n\n") if len(p.strip()) > 40]
    return docs


def train_tokenizer(docs: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on `docs`, as transformers' PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def write_calibration_file(path: Path, docs: list[str]) -> Path:
    path.write_text("\n".join(d.replace("\n", " ") for d in docs) + "\n", encoding="utf-8")
    return path


def make_llama(folder: Path, config: dict | None = None, dtype: str = "bfloat16", seed: int = 0,
               train_steps: int = 0, tokenizer=None, max_shard_size: str | None = None) -> Path:
    """Save a Llama causal LM with random weights (trained for `train_steps` steps of next-token
    prediction on the help text when asked) and a tokenizer into `folder`."""
    import torch
    import transformers

    docs = help_text_documents()
    settings = {**TINY_LLAMA, **(config or {})}
    tokenizer = tokenizer or train_tokenizer(docs, settings["vocab_size"])
    settings.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings))
    if train_steps:
        _train(model, tokenizer, docs, train_steps)
    model = model.to(getattr(torch, dtype))
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    tokenizer.save_pretrained(folder)
    return folder


def _train(model, tokenizer, docs: list[str], steps: int, seq_len: int = 128, batch: int = 8) -> None:
    """A few hundred steps of AdamW on the first 80% of the help text (the rest stays unseen)."""
    import torch

    ids = tokenizer("\n".join(docs[: int(len(docs) * 0.8)]))["input_ids"]
    data = torch.tensor(ids[: len(ids) // seq_len * seq_len]).view(-1, seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        rows = data[torch.randint(0, data.shape[0], (batch,), generator=generator)]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
