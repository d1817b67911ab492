"""transformers device_map="auto": sizer's placement (sizer.plan.device_map) against accelerate's own
infer_auto_device_map and transformers' get_balanced_memory on a model built on the meta device."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
accelerate = pytest.importorskip("accelerate")

from sizer.inputs.resolve import get_model  # noqa: E402
from sizer.plan.device_map import balanced_max_memory, infer_device_map, layers_by_device, module_tree  # noqa: E402
from sizer.quant import get_precision  # noqa: E402


def _meta_llama(tmp_path, layers=6, vocab=1000):
    from accelerate import init_empty_weights

    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=688,
                                   num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                   tie_word_embeddings=False, max_position_embeddings=4096)
    cfg.save_pretrained(tmp_path)
    with init_empty_weights():
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    return model, get_model(str(tmp_path))


def test_module_sizes_match_accelerates(tmp_path):
    from accelerate.utils import compute_module_sizes

    model, spec = _meta_llama(tmp_path)
    sizes = compute_module_sizes(model)
    tree = module_tree(spec, get_precision("bf16"))
    stack = [tree]
    while stack:
        m = stack.pop()
        assert sizes[m.name] == m.size, m.name
        stack.extend(m.children)


@pytest.mark.parametrize("budget", [
    {0: 6_000_000, "cpu": 4_000_000},               # layers on the GPU, then the CPU, then disk
    {0: 6_000_000, "cpu": 100_000_000},
    {0: 3_000_000, "cpu": 4_000_000},
    {0: 5_000_000, 1: 4_000_000, "cpu": 5_000_000},  # two GPUs and the CPU
    {0: 20_000_000},                                 # everything on the GPU
    {0: 1_000_000, "cpu": 1_000_000},                # mostly disk
    {0: 4_500_000, 1: 3_000_000, "cpu": 3_000_000},  # two GPUs, CPU, disk
])
def test_placement_matches_accelerate(tmp_path, budget):
    _compare(tmp_path, budget)


def _compare(tmp_path, budget):
    from accelerate import infer_auto_device_map

    model, spec = _meta_llama(tmp_path)
    theirs = infer_auto_device_map(model, max_memory=dict(budget), no_split_module_classes=model._no_split_modules,
                                   clean_result=False)
    tree = module_tree(spec, get_precision("bf16"))
    mine = infer_device_map(tree, dict(budget))
    assert mine == dict(theirs)
    return layers_by_device(mine, tree)


def test_placement_spans_gpus_cpu_and_disk(tmp_path):
    by_device = _compare(tmp_path, {0: 5_000_000, 1: 3_000_000, "cpu": 3_000_000})
    assert set(by_device) == {0, 1, "cpu", "disk"}


def test_balanced_memory_matches_transformers(tmp_path):
    from transformers.integrations.accelerate import get_balanced_memory

    model, spec = _meta_llama(tmp_path, layers=8)
    budget = {0: 9_000_000, 1: 9_000_000, "cpu": 50_000_000}
    theirs = get_balanced_memory(model, max_memory=dict(budget), no_split_module_classes=model._no_split_modules)
    mine = balanced_max_memory(module_tree(spec, get_precision("bf16")), dict(budget), user_set=True)
    assert mine == theirs
    placed = infer_device_map(module_tree(spec, get_precision("bf16")), mine)
    by_device = layers_by_device(placed, module_tree(spec, get_precision("bf16")))
    assert by_device[0] and by_device[1] and sum(map(len, by_device.values())) == 8
