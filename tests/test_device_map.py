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
@pytest.mark.filterwarnings("ignore:Current model requires .* bytes of buffer for offloaded layers")  # accelerate's, on purpose
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


def test_fit_offload_reproduces_accelerates_placement_for_the_printed_max_memory():
    """`sizer fit ... --ram` for transformers answers fits-with-offload with a from_pretrained line; the
    max_memory it prints, given to transformers' own get_balanced_memory and accelerate's placement on
    a meta-device Llama 3 8B, puts exactly n_gpu_layers decoder layers on the GPU."""
    import json

    from accelerate import infer_auto_device_map, init_empty_weights
    from click.testing import CliRunner
    from transformers.integrations.accelerate import get_balanced_memory

    from sizer.cli import cli

    r = CliRunner().invoke(cli, ["fit", "llama3-8b", "-p", "bf16", "--gpus", "RTX-3060", "--ram", "64GB",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    o = json.loads(r.output)["options"][0]
    assert o["verdict"] == "fits-with-offload" and 0 < o["n_gpu_layers"] < 32
    assert 'device_map="auto", max_memory={0: "' in o["launch"][0]["command"]
    budget = {int(k) if k.isdigit() else k: v for k, v in o["engine_log"]["values"]["max_memory"].items()}
    spec = get_model("llama3-8b")
    cfg = transformers.LlamaConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
                                   intermediate_size=spec.d_ff, num_hidden_layers=spec.n_layers,
                                   num_attention_heads=spec.n_heads, num_key_value_heads=spec.n_kv_heads,
                                   tie_word_embeddings=False)
    with init_empty_weights():
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    balanced = get_balanced_memory(model, max_memory=dict(budget), no_split_module_classes=model._no_split_modules)
    placed = infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=model._no_split_modules)
    on_gpu = sum(1 for i in range(32) if placed.get(f"model.layers.{i}", placed.get("model.layers", placed.get("model"))) == 0)
    assert on_gpu == o["n_gpu_layers"]
    assert o["host"]["weights"] > 0 and o["decode_tokens_per_s"] < 10
